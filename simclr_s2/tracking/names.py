"""Names the registry and the runs are found by: the registered models and the tag that says a run's stage.
A module of constants, so what only needs a name (a search, ending a launcher's run) imports no torch."""

ENCODER_MODEL = "simclr-s2-encoder"
CLASSIFIER_MODEL = "simclr-s2-irrigation"
STAGE_TAG = "stage"
COMPLETE_TAG = "simclr_s2.complete"  # "true" on a run that finished its work: the only kind reused or ranked
