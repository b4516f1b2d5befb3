"""Neural-network modules: the model contract (``base``), dual-domain and per-timestep batch
norm (``ddbn``), BNLSTM / DDLSTM layers and stacks (``lstm``), a GRU with recurrent dropout
(``gru``), input projections (``heads``), the models the built-in plugins build (``models``) and
re-estimation of population statistics (``reestimate``). Import the submodules directly."""
