"""Orchestration around stylecore: one module per DVC stage. Ray, MLflow and DVC live here only."""
