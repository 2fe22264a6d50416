"""Download mirrors and SHA-256 digests of the IDX data sets.

Digests come from TensorFlow Datasets' recorded checksums
(``tensorflow/datasets``: ``tensorflow_datasets/url_checksums/mnist.txt`` and
``tensorflow_datasets/url_checksums/fashion_mnist.txt``), which also record
the sizes (MNIST: 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes; Fashion-MNIST:
26,421,880 / 29,515 / 4,422,102 / 5,148 bytes). The MNIST files on every
mirror below are byte-identical to LeCun's originals (torchvision checks the
same files against MD5 ``f68b3c2dcbeaaa9fbdd348bbdeb94873`` etc.).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple


class IdxSource(NamedTuple):
    """Where an IDX data set is downloaded from.

    Attributes:
        label: Human name used in messages, e.g. ``"MNIST"``.
        folder: Name of the data set's subfolder in the cache root.
        mirrors: Base URLs, tried in order; a file's URL is ``<mirror>/<file name>``.
        files: Split -> ``(images file name, labels file name)``.
        checksums: File name -> SHA-256 hex digest.
        num_classes: Number of classes.
    """

    label: str
    folder: str
    mirrors: tuple[str, ...]
    files: MappingProxyType
    checksums: MappingProxyType
    num_classes: int


_IDX_FILES = MappingProxyType({
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
})

MNIST = IdxSource(
    label="MNIST",
    folder="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist",  # mirror used by torchvision
        "http://yann.lecun.com/exdb/mnist",  # the original
    ),
    files=_IDX_FILES,
    checksums=MappingProxyType({
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
    num_classes=10,
)

FASHION_MNIST = IdxSource(
    label="Fashion-MNIST",
    folder="fashion_mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",  # Zalando's bucket
    ),
    files=_IDX_FILES,
    checksums=MappingProxyType({
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
    num_classes=10,
)
