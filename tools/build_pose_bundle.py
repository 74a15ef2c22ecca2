"""Build avatar_nb/models/pose_landmarker_full.task from the pose models inside a mediapipe 0.10.x wheel.

The maintained `mediapipe` (1.2.x) runs pose landmarking through its tasks API, which reads a `.task` bundle (a
zip of `pose_detector.tflite` and `pose_landmarks_detector.tflite`, each carrying input-normalisation metadata).
The 0.10.x wheels ship the two models without that metadata. This script takes them from such a wheel (downloaded
into a temporary folder, or given with --wheel), adds the metadata with mediapipe's own writer and writes the bundle.
It needs `mediapipe>=1.2` installed (for the writer) and is run once by a maintainer; nothing downloads at run time.

    python tools/build_pose_bundle.py                      # pip download mediapipe==0.10.21 into a temp dir
    python tools/build_pose_bundle.py --wheel path/to/mediapipe-0.10.21-*.whl
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBERS = {"pose_detector.tflite": "mediapipe/modules/pose_detection/pose_detection.tflite",
           "pose_landmarks_detector.tflite": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"}
# input normalisation of each model: (mean, std) on 0..255 RGB
NORM = {"pose_detector.tflite": (127.5, 127.5), "pose_landmarks_detector.tflite": (0.0, 255.0)}
OUT = Path(__file__).resolve().parents[1] / "avatar_nb" / "models" / "pose_landmarker_full.task"


def _metadata_version_module():
    """mediapipe 1.2.x's wheel lacks the compiled `_pywrap_metadata_version` its metadata populator imports.
    The metadata written here uses only schema 1.0.0 fields (general info, one normalised image input, plain
    feature outputs), so the minimum parser version it would compute is 1.0.0."""
    import types
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    try:
        __import__(name)
        return
    except ImportError:
        pass
    for parent in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
        sys.modules.setdefault(parent, types.ModuleType(parent))
    m = types.ModuleType(name)
    m.GetMinimumMetadataParserVersion = lambda buf: "1.0.0"
    sys.modules[name] = m


def with_metadata(name: str, model: bytes) -> bytes:
    "The model with image-input and feature-output metadata, written by mediapipe's metadata writer."
    _metadata_version_module()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, writer_utils
    mean, std = NORM[name]
    w = metadata_writer.MetadataWriter.create(bytearray(model))
    w.add_general_info(name.removesuffix(".tflite"), f"{MEMBERS[name]} from the mediapipe 0.10.x wheel")
    w.add_image_input(norm_mean=[mean], norm_std=[std])
    for _ in writer_utils.get_output_tensor_names(bytearray(model)): w.add_feature_output()
    return bytes(w.populate()[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", help="a mediapipe 0.10.13-0.10.21 wheel; default: pip download it into a temp dir")
    ap.add_argument("--version", default="0.10.21", help="mediapipe version to download when --wheel is not given")
    ap.add_argument("--out", default=str(OUT), help="bundle to write")
    a = ap.parse_args(argv)
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import create_model_asset_bundle
    with tempfile.TemporaryDirectory() as tmp:
        wheel = a.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                            f"mediapipe=={a.version}", "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            models = {name: with_metadata(name, z.read(member)) for name, member in MEMBERS.items()}
            raw = {name: hashlib.sha256(z.read(member)).hexdigest() for name, member in MEMBERS.items()}
        out = Path(a.out)
        part = out.with_name(out.name + ".part")
        create_model_asset_bundle(models, str(part))
        os.replace(part, out)
    print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()})")
    print(f"from {Path(wheel).name}:")
    for name, member in MEMBERS.items(): print(f"  {member} sha256 {raw[name]} -> {name}")


if __name__ == "__main__":
    main()
