"""mtlrec.data_pipeline: day partitions, Parquet/TFRecord readers, validation, conversion,
synthetic data generators."""

from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.partitions import list_days, resolve_days, select_days
from mtlrec.data_pipeline.synthetic.synthetic_funnel import funnel_schema_dict, generate_funnel
from mtlrec.data_pipeline.synthetic.synthetic_taste import generate_taste_days, taste_schema_dict
from mtlrec.data_pipeline.synthetic.mmoe_synthetic import mmoe_synthetic
from mtlrec.data_pipeline.dataset import make_dataset
from mtlrec.data_pipeline.validation import validate_day
from mtlrec.data_pipeline.convert import convert_day
from mtlrec.data_pipeline.id_collisions import collision_report, collision_warnings

__all__ = [
    "DataValidationError",
    "collision_report",
    "collision_warnings",
    "convert_day",
    "funnel_schema_dict",
    "generate_funnel",
    "generate_taste_days",
    "list_days",
    "make_dataset",
    "mmoe_synthetic",
    "resolve_days",
    "select_days",
    "taste_schema_dict",
    "validate_day",
]
