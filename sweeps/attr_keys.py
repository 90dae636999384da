"""The keys of the user attributes this project keeps on Optuna studies and trials.

Existing studies hold them: a key is never renamed.
"""

# On a study.
SPACE_ATTR = "sweeps.space"  # its search space's signature: a resume must search the same
CONFIG_ATTR = "sweeps.config"  # the SweepConfig it was created with (`sweeps worker`)
DATA_ATTR = "sweeps.data"  # the versions of its data files (`sweeps.data_pins`)
EXPERIMENT_ATTR = "mlflow_experiment_id"  # its MLflow experiment
PARENT_ATTR = "mlflow_parent_run_id"  # its MLflow parent run

# On a trial.
RECORD_ATTR = "sweeps.record"  # its record, for repair (`sweeps.records.repair_info`)
DATA_VERSION_ATTR = "sweeps.data_version"  # the version of the data it was trained on
REUSED_ATTR = "sweeps.reused_from"  # the earlier trial whose result it took
SHARE_ATTR = "sweeps.share"  # the share of a launch it counts toward (`sweeps.shares`)
