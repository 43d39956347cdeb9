"""Column definitions shared by the export's tables.

Each column: its name, Arrow type and the `datasets` feature it stands for. The
feature dict goes into every Parquet file's "huggingface" schema metadata, which
is what makes `datasets` decode the image struct as an Image feature.
"""

from dataclasses import dataclass

import pyarrow as pa

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TIMESTAMP = pa.timestamp("us", tz="UTC")


def value_feature(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    feature: dict
    description: str = ""
