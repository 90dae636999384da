"""The tags this project sets on MLflow experiments and runs, MLflow's own included.

Existing stores hold them: a key or a role is never renamed.
"""

# On a study's experiment.
STUDY_UID_TAG = "sweeps.study_uid"  # the study it belongs to (`ResultsStore.study_uid`)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow's UI opens an experiment by its kind
MODEL_TRAINING_KIND = "custom_model_development"  # not the GenAI overview

# On every run: what it is (one of the roles below) and its study.
ROLE_TAG = "sweeps.role"
STUDY_TAG = "sweeps.study"
PARENT_ROLE = "parent"  # a study's parent run
TRIAL_ROLE = "trial"  # a study's trial (what `sweeps check` counts and repairs)
TRAIN_ROLE = "train"  # a run of `sweeps train`, which belongs to no study
CONFIRMATION_ROLE = "confirmation"  # a candidate retrained by `sweeps confirm`

# On a trial's run.
TRIAL_NUMBER_TAG = "sweeps.trial_number"
STATE_TAG = "sweeps.state"  # the trial's state (a TrialState value)
DEVICE_TAG = "sweeps.device"
PRUNED_TAG = "sweeps.pruned"  # "true" on a PRUNED trial's run
ERROR_TAG = "sweeps.error"  # why the trial did not complete
REUSED_FROM_TAG = "sweeps.reused_from"  # the earlier trial whose result it took
ARCHIVE_TAG = "sweeps.archive"  # its files' archive among the parent run's artifacts

# On a confirmation run, instead of the trial number.
CANDIDATE_TAG = "sweeps.candidate"  # the trial retrained
SEED_TAG = "sweeps.seed"
DATA_SEED_TAG = "sweeps.data_seed"

# On a parent run: the best trial so far.
BEST_TRIAL_TAG = "sweeps.best_trial"
BEST_PENALTY_TAG = "sweeps.best_penalty"
BEST_LAMBDA_TAG = "sweeps.best_lambda"
BEST_L1_RATIO_TAG = "sweeps.best_l1_ratio"
BEST_RUN_ID_TAG = "sweeps.best_run_id"

# MLflow's own.
PARENT_RUN_ID_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
NOTE_TAG = "mlflow.note.content"


def tag_filter(key: str, value: str) -> str:
    """A `search_runs` filter for the runs whose tag `key` is `value`."""
    return f"tags.`{key}` = '{value}'"
