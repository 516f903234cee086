"""QR codes for enrollment URIs: terminal, PNG and SVG (qrcode); photos read with zxing-cpp.

The terminal and SVG forms need only qrcode, which every install has. PNG output needs Pillow
and reading photos needs Pillow and zxing-cpp: the ``camera`` extra, which a headless device
need not install. Without it those two say in one line what to install.
"""

from __future__ import annotations

import importlib.util
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import qrcode
import qrcode.image.svg

from pairing.errors import PairingError

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: Image files larger than this are refused unread (a phone photo is a few MiB).
MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: Pixels decoded at most: a 24-megapixel photo; JPEGs above it are decoded scaled down.
MAX_IMAGE_PIXELS = 25_000_000
#: The decoders Pillow may use: what cameras and screenshots produce, nothing exotic.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


class UnreadableQR(PairingError):
    """No usable QR code could be read from an image."""


class MissingExtra(PairingError):
    """A feature needs an optional part of the package that is not installed."""


CAMERA_HINT = "pip install 'xmpp-device-pairing[camera]'"


def _require_camera_extra(what: str, modules: tuple[str, ...]) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"{what} needs the camera extra ({', '.join(missing)} missing): {CAMERA_HINT}"
        )


def _code(text: str) -> qrcode.QRCode:
    # Level M survives a little glare or a crease; qrcode picks alphanumeric mode by itself
    # when every character allows it (our URIs are built so that they do).
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    return qr


def modules(text: str) -> int:
    """The side of the QR code in modules (33 for version 4, 41 for 6, ...)."""
    return int(_code(text).modules_count)


def terminal(text: str) -> str:
    """The QR code drawn with half-block characters, for a terminal."""
    out = io.StringIO()
    _code(text).print_ascii(out=out, invert=True)
    return out.getvalue()


def write_png(text: str, path: Path, *, box_size: int = 8) -> None:
    _require_camera_extra("writing a PNG QR code", ("PIL",))
    qr = _code(text)
    qr.box_size = box_size
    qr.make_image().save(str(path))


def write_svg(text: str, path: Path) -> None:
    image = _code(text).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    image.save(str(path))


def svg(text: str) -> str:
    """The QR code as an ``<svg>`` element, to put into a web page (no XML declaration)."""
    image = _code(text).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    markup = image.to_string(encoding="unicode")
    return str(markup[markup.index("<svg") :])


def read_image(path: Path) -> str:
    """The text of the QR code in a photo or screenshot, or :class:`UnreadableQR`.

    A hostile image is refused before it is decoded: files over :data:`MAX_IMAGE_BYTES`, and
    images whose header declares more than :data:`MAX_IMAGE_PIXELS` (a 20000 x 20000 PNG of a
    few kilobytes would otherwise take gigabytes). Large JPEG photos are decoded at a
    reduced scale instead, which costs nothing in reading a QR code.
    """
    _require_camera_extra("reading a QR code from an image", ("PIL", "zxingcpp"))
    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    data = _read_bounded(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice that; we refuse earlier.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                _check_size(path, img)
                img.load()
                codes = zxingcpp.read_barcodes(
                    img.convert("L"),
                    formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode),
                )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableQR(_too_large(path)) from None
    except UnidentifiedImageError:
        raise UnreadableQR(
            f"{path} is not an image this program can read ({', '.join(IMAGE_FORMATS)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports broken files as OSError, and some malformed headers as SyntaxError.
        raise UnreadableQR(f"{path} is not an image this program can read: {exc}") from None
    texts = [code.text for code in codes if code.valid and code.text]
    if not texts:
        raise UnreadableQR(
            f"no readable QR code in {path}: take the photo closer, straight on, without glare"
        )
    if len(set(texts)) > 1:
        raise UnreadableQR(f"{path} holds {len(texts)} different QR codes; crop it to one")
    return texts[0]


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:  # bounded: the path may be a pipe or a device
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        raise UnreadableQR(f"{path} does not exist") from None
    except OSError as exc:
        raise UnreadableQR(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise UnreadableQR(
            f"{path} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB; "
            "use a smaller photo or a screenshot of the code"
        )
    return data


def _check_size(path: Path, img: PILImage.Image) -> None:
    """Refuse from the header, before any pixel is decoded; shrink big JPEGs while decoding."""
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS and img.format == "JPEG":
        scale = math.ceil(math.sqrt(width * height / MAX_IMAGE_PIXELS))
        img.draft("L", (width // scale, height // scale))  # decodes at 1/2, 1/4 or 1/8
        width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        raise UnreadableQR(_too_large(path, width, height))


def _too_large(path: Path, width: int = 0, height: int = 0) -> str:
    size = f" ({width} x {height})" if width else ""
    return (
        f"{path} is too large an image{size}: at most {MAX_IMAGE_PIXELS // 1_000_000} "
        "megapixels; use a smaller photo or a screenshot of the code"
    )
