"""The public DDBN op. (Interim: always the pure-PyTorch reference until the extension lands.)"""

from actrec.ops.ddbn_reference import ddbn_eval_reference as ddbn_eval
from actrec.ops.ddbn_reference import ddbn_reference as ddbn

__all__ = ["ddbn", "ddbn_eval"]
