"""Real-log loaders: parsing, unit and sign conversion, frames, bad input, format detection.

Expected labels are computed by hand from each format's documented convention (road-wheel
degrees, positive = left).
"""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from drivenet_patch.data import (
    FORMATS,
    CommaAiDataset,
    CropResize,
    SullyChenDataset,
    SynthDataset,
    UdacityCh2Dataset,
    UdacitySimDataset,
    detect_format,
    open_dataset,
)
from drivenet_patch.safety.errors import PDNError

RED = np.array([255, 0, 0])
BLUE = np.array([0, 0, 255])


def assert_model_frame(frame: np.ndarray, size: tuple[int, int] = (66, 200)) -> None:
    assert frame.shape == (*size, 3)
    assert frame.dtype == np.uint8


def mean_rgb(frame: np.ndarray) -> np.ndarray:
    return frame.reshape(-1, 3).mean(axis=0)


# ---------------------------------------------------------------------------------------------
# Udacity simulator
# ---------------------------------------------------------------------------------------------
class TestUdacitySim:
    def test_header_relative_paths_and_sign(self, make_sim):
        root = make_sim([0.1, -0.2, 0.0], header=True)
        ds = UdacitySimDataset(root)
        assert len(ds) == 3
        # simulator positive = right -> negate; 25 deg at full lock
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-2.5, 5.0, 0.0])
        assert ds.labels["source_row"].tolist() == [2, 3, 4]  # header is row 1
        assert set(ds.labels["camera"]) == {"center"}
        assert ds.labels["image"].iloc[0].endswith("IMG/center_2016_12_01_13_30_48_000.jpg")
        frame, steer = ds[1]
        assert_model_frame(frame)
        assert steer == pytest.approx(5.0)

    def test_no_header_windows_paths(self, make_sim):
        ds = UdacitySimDataset(make_sim([0.4, -1.0], style="windows"))
        assert len(ds) == 2
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-10.0, 25.0])
        assert ds.labels["source_row"].tolist() == [1, 2]
        assert Path(ds.labels["image"].iloc[1]).name == "center_2016_12_01_13_30_48_001.jpg"
        assert_model_frame(ds.frame(1))

    def test_posix_paths_from_another_machine(self, make_sim):
        ds = UdacitySimDataset(make_sim([0.2], style="posix"))
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-5.0])
        assert_model_frame(ds.frame(0))

    def test_left_right_cameras_and_correction(self, make_sim):
        root = make_sim([0.1, 0.0])
        ds = UdacitySimDataset(root, cameras=("center", "left", "right"), correction_deg=5.0)
        assert len(ds) == 6
        assert ds.labels["camera"].tolist() == ["center", "left", "right"] * 2
        # left camera: car looks displaced left -> steer right -> label more negative
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-2.5, -7.5, 2.5, 0.0, -5.0, 5.0])
        assert Path(ds.labels["image"].iloc[1]).name.startswith("left_")
        assert ds.labels["lateral_m"].iloc[1] > 0 > ds.labels["lateral_m"].iloc[2]

    def test_max_steer_configurable(self, make_sim):
        ds = UdacitySimDataset(make_sim([0.1, -0.5]), max_steer_deg=20.0)
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-2.0, 10.0])

    def test_default_crop_and_rgb_order(self, make_sim):
        ds = UdacitySimDataset(make_sim([0.0]))
        assert (ds.crop.top, ds.crop.bottom, ds.crop.size) == (70, 25, (66, 200))
        assert (ds.camera.height, ds.camera.width) == (160, 320)
        frame = ds.frame(0)
        # rows 70..135 of the source: red down to row 80, blue below -> both colours present, in RGB
        assert np.abs(frame[0].astype(int) - RED).max() < 40
        assert np.abs(frame[-1].astype(int) - BLUE).max() < 40

    def test_crop_config(self, make_sim):
        root = make_sim([0.0])
        ds = UdacitySimDataset(root, crop=CropResize(top=0, bottom=90, left=10, right=10, size=(33, 100)))
        frame = ds.frame(0)
        assert_model_frame(frame, (33, 100))
        assert np.abs(mean_rgb(frame) - RED).max() < 20  # only the red upper part is kept
        ds2 = UdacitySimDataset(root, size=(40, 120))
        assert_model_frame(ds2.frame(0), (40, 120))

    def test_missing_image(self, make_sim):
        root = make_sim([0.0, 0.1, 0.2])
        (root / "IMG" / "center_2016_12_01_13_30_48_001.jpg").unlink()
        with pytest.raises(PDNError, match=r"driving_log\.csv: row 2: center image not found"):
            UdacitySimDataset(root)

    def test_corrupt_image(self, make_sim):
        root = make_sim([0.0, 0.1])
        bad = root / "IMG" / "center_2016_12_01_13_30_48_001.jpg"
        bad.write_bytes(b"\x00garbage, not a jpeg" * 10)
        ds = UdacitySimDataset(root)  # structure is fine; decoding fails lazily
        assert_model_frame(ds.frame(0))
        with pytest.raises(PDNError) as exc:
            ds.frame(1)
        msg = str(exc.value)
        assert bad.name in msg and "driving_log.csv: row 2" in msg and "cannot decode" in msg

    @pytest.mark.parametrize(
        ("value", "needle"),
        [("abc", "not a number: 'abc'"), ("nan", "not a finite number"), ("inf", "not a finite")],
    )
    def test_bad_steering(self, make_sim, value, needle):
        root = make_sim([0.0, 0.1, value])
        with pytest.raises(PDNError, match=r"driving_log\.csv: row 3: steering") as exc:
            UdacitySimDataset(root)
        assert needle in str(exc.value)

    def test_steering_out_of_range(self, make_sim):
        with pytest.raises(PDNError, match=r"row 1: steering 12\.0 is outside"):
            UdacitySimDataset(make_sim([12.0]))

    def test_wrong_header(self, make_sim):
        root = make_sim([0.0])
        log = root / "driving_log.csv"
        log.write_text("center,left,right,angle,throttle,brake,speed\n" + log.read_text())
        with pytest.raises(PDNError, match=r"driving_log\.csv: row 1: unexpected header"):
            UdacitySimDataset(root)

    def test_wrong_field_count(self, make_sim):
        root = make_sim([0.0])
        log = root / "driving_log.csv"
        log.write_text(log.read_text() + "IMG/center_2016_12_01_13_30_48_000.jpg, 0.1\n")
        with pytest.raises(PDNError, match=r"row 2: expected 7 fields"):
            UdacitySimDataset(root)

    @pytest.mark.parametrize("content", ["", "center,left,right,steering,throttle,brake,speed\n", "\n\n"])
    def test_empty(self, make_sim, content):
        root = make_sim([0.0])
        (root / "driving_log.csv").write_text(content)
        with pytest.raises(PDNError, match=r"driving_log\.csv: .*empty"):
            UdacitySimDataset(root)

    def test_missing_log(self, tmp_path):
        with pytest.raises(PDNError, match=r"driving_log\.csv: missing"):
            UdacitySimDataset(tmp_path)

    def test_relative_path_escaping(self, make_sim):
        root = make_sim([0.0])
        (root / "driving_log.csv").write_text("../../etc/passwd, IMG/x.jpg, IMG/y.jpg, 0.0, 0, 0, 0\n")
        with pytest.raises(
            PDNError, match=r"driving_log\.csv: row 1: path .*etc/passwd.* leaves the dataset folder"
        ):
            UdacitySimDataset(root)

    def test_absolute_path_outside(self, make_sim, image_writer, tmp_path):
        root = make_sim([0.0])
        outside = image_writer(tmp_path / "elsewhere" / "frame.png")
        (root / "driving_log.csv").write_text(f"{outside}, IMG/x.jpg, IMG/y.jpg, 0.1, 0, 0, 0\n")
        with pytest.raises(PDNError, match=r"row 1: path .*frame\.png.* leaves the dataset folder"):
            UdacitySimDataset(root)
        ds = UdacitySimDataset(root, allow_outside=True)
        assert ds.labels["image"].iloc[0] == str(outside)
        assert_model_frame(ds.frame(0))

    def test_bad_options(self, make_sim):
        root = make_sim([0.0])
        with pytest.raises(PDNError, match="cameras"):
            UdacitySimDataset(root, cameras=("center", "top"))
        with pytest.raises(PDNError, match="max_steer_deg"):
            UdacitySimDataset(root, max_steer_deg=0.0)


# ---------------------------------------------------------------------------------------------
# Udacity Challenge 2
# ---------------------------------------------------------------------------------------------
class TestUdacityCh2:
    ROWS = (
        ("left_camera", 0.3),
        ("center_camera", 0.5),
        ("right_camera", 0.3),
        ("center_camera", -0.25),
        ("center_camera", 0.0),
    )

    def test_center_only_radians_to_road_wheel_degrees(self, make_ch2):
        ds = UdacityCh2Dataset(make_ch2(self.ROWS))
        assert len(ds) == 3
        # degrees(0.5) = 28.6479 wheel deg / 14.8 = 1.93567 road-wheel deg; positive = left kept
        assert ds.labels["steering_deg"].tolist() == pytest.approx([1.9356682, -0.9678341, 0.0], abs=1e-6)
        assert ds.labels["source_row"].tolist() == [3, 5, 6]
        assert all("/center/" in p for p in ds.labels["image"])
        assert (ds.camera.height, ds.camera.width) == (480, 640)
        assert_model_frame(ds.frame(0))

    def test_steering_ratio(self, make_ch2):
        ds = UdacityCh2Dataset(make_ch2([("center_camera", math.radians(16.0))]), steering_ratio=16.0)
        assert ds.labels["steering_deg"].tolist() == pytest.approx([1.0])

    def test_csv_path_and_header_order(self, make_ch2):
        root = make_ch2([("center_camera", 0.1)])
        ds = UdacityCh2Dataset(root / "interpolated.csv")
        assert len(ds) == 1

    def test_wrong_header(self, make_ch2):
        root = make_ch2(
            [("center_camera", 0.1)], header="index,timestamp,width,height,frame,file,steer,a,b,c,d,e"
        )
        with pytest.raises(PDNError, match=r"interpolated\.csv: row 1: unexpected header"):
            UdacityCh2Dataset(root)

    @pytest.mark.parametrize(("angle", "needle"), [("left", "not a number"), ("NaN", "not a finite number")])
    def test_bad_angle(self, make_ch2, angle, needle):
        root = make_ch2([("center_camera", 0.1), ("center_camera", angle)])
        with pytest.raises(PDNError, match=rf"interpolated\.csv: row 3: angle is {needle}"):
            UdacityCh2Dataset(root)

    def test_no_center_rows_is_empty(self, make_ch2):
        with pytest.raises(PDNError, match="no center_camera rows"):
            UdacityCh2Dataset(make_ch2([("left_camera", 0.1), ("right_camera", 0.1)]))

    def test_missing_image(self, make_ch2):
        root = make_ch2([("center_camera", 0.1), ("center_camera", 0.2)])
        next(iter(sorted((root / "center").glob("*.jpg")))).unlink()
        with pytest.raises(PDNError, match=r"interpolated\.csv: row 2: image not found"):
            UdacityCh2Dataset(root)

    def test_path_escaping(self, make_ch2):
        root = make_ch2([("center_camera", 0.1)])
        log = root / "interpolated.csv"
        head = log.read_text().splitlines()[0]
        log.write_text(head + "\n0,1,640,480,center_camera,../../../etc/passwd,0.1,0,0,0,0,0\n")
        with pytest.raises(PDNError, match=r"row 2: path .* leaves the dataset folder"):
            UdacityCh2Dataset(root)


# ---------------------------------------------------------------------------------------------
# SullyChen
# ---------------------------------------------------------------------------------------------
class TestSullyChen:
    def test_2017_format_images_next_to_data_txt(self, make_sully):
        ds = SullyChenDataset(make_sully([0.0, 29.6, -14.8]))
        assert len(ds) == 3
        # SullyChen positive = right (clockwise wheel): negate, then / 14.8
        assert ds.labels["steering_deg"].tolist() == pytest.approx([0.0, -2.0, 1.0])
        assert ds.labels["timestamp"].tolist() == ["", "", ""]
        assert ds.crop.top == 106
        assert (ds.camera.height, ds.camera.width) == (256, 455)
        assert_model_frame(ds.frame(2))

    def test_2018_format_with_timestamps_in_data_folder(self, make_sully):
        ds = SullyChenDataset(make_sully([1.5, -3.0], stamps=True, subdir="data"), steering_ratio=15.0)
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-0.1, 0.2])
        assert ds.labels["timestamp"].tolist() == ["2018-07-01 17:09:44:000", "2018-07-01 17:09:44:001"]
        assert Path(ds.labels["image"].iloc[0]).parent.name == "data"
        assert_model_frame(ds.frame(0))

    def test_data_txt_path(self, make_sully):
        root = make_sully([1.0])
        assert len(SullyChenDataset(root / "data.txt")) == 1

    def test_bad_lines(self, make_sully):
        root = make_sully([0.0, 1.0])
        (root / "data.txt").write_text("0.jpg 0.0\n1.jpg\n")
        with pytest.raises(PDNError, match=r"data\.txt: row 2: expected '<file>\.jpg <angle>"):
            SullyChenDataset(root)
        (root / "data.txt").write_text("0.jpg 0.0\n1.jpg 1.0\n\n0.jpg abc,2018-07-01 17:09:44:912\n")
        with pytest.raises(PDNError, match=r"data\.txt: row 4: steering angle is not a number"):
            SullyChenDataset(root)
        (root / "data.txt").write_text("0.jpg nan\n")
        with pytest.raises(PDNError, match=r"data\.txt: row 1: steering angle is not a finite number"):
            SullyChenDataset(root)

    def test_missing_image_and_empty(self, make_sully):
        root = make_sully([0.0, 1.0])
        (root / "1.jpg").unlink()
        with pytest.raises(PDNError, match=r"data\.txt: row 2: image not found: '1\.jpg'"):
            SullyChenDataset(root)
        (root / "data.txt").write_text("\n")
        with pytest.raises(PDNError, match=r"data\.txt: .*empty"):
            SullyChenDataset(root)

    def test_path_escaping(self, make_sully, image_writer, tmp_path):
        root = make_sully([0.0])
        secret = image_writer(tmp_path / "secret.jpg")
        (root / "data.txt").write_text("../secret.jpg 0.0\n")
        with pytest.raises(
            PDNError, match=r"data\.txt: row 1: path .*secret\.jpg.* leaves the dataset folder"
        ):
            SullyChenDataset(root)
        (root / "data.txt").write_text(f"{secret} 0.0\n")
        with pytest.raises(PDNError, match=r"row 1: path .* leaves the dataset folder"):
            SullyChenDataset(root)


# ---------------------------------------------------------------------------------------------
# comma.ai
# ---------------------------------------------------------------------------------------------
class TestCommaAi:
    # raw steering is tenths of a wheel degree, positive = right; frame 2 gets no sample,
    # ptr 7 lies beyond the 4 frames and is ignored.
    STEER = (100.0, 200.0, 300.0, -153.0, -153.0, 0.0, 999.0)
    PTR = (0.0, 0.0, 0.0, 1.0, 1.0, 3.0, 7.0)

    def test_ptr_averaging_units_and_sign(self, make_comma):
        ds = CommaAiDataset(make_comma(4, self.STEER, self.PTR))
        assert len(ds) == 3
        assert ds.labels["frame"].tolist() == [0, 1, 3]
        assert ds.labels["log_samples"].tolist() == [3, 2, 1]
        # frame 0: mean 200 -> 20 wheel deg right -> -20 / 15.3 road-wheel deg
        assert ds.labels["steering_deg"].tolist() == pytest.approx([-20.0 / 15.3, 1.0, 0.0])
        assert (ds.camera.height, ds.camera.width) == (160, 320)

    def test_frames_lazy_and_rgb(self, make_comma):
        ds = CommaAiDataset(make_comma(4, self.STEER, self.PTR))
        assert ds._handles == {}  # nothing opened until a frame is asked for
        src = ds.source_frame(2)  # third kept frame = stored frame 3
        assert src.shape == (160, 320, 3)
        assert tuple(src[0, 0]) == (120, 0, 200)
        frame = ds.frame(2)
        assert_model_frame(frame)
        assert np.allclose(mean_rgb(frame), [120, 0, 200], atol=1)
        clone = pickle.loads(pickle.dumps(ds))
        assert np.array_equal(clone.frame(2), frame)
        ds.close()

    def test_options(self, make_comma):
        root = make_comma(4, self.STEER, self.PTR)
        ds = CommaAiDataset(root / "camera" / "2016-01-30--11-24-51.h5", steering_ratio=10.0, angle_scale=1.0)
        assert ds.labels["steering_deg"].iloc[0] == pytest.approx(-20.0)
        assert len(CommaAiDataset(root, files=["2016-01-30--11-24-51"])) == 3
        with pytest.raises(PDNError, match=r"nope\.h5: missing"):
            CommaAiDataset(root, files=["nope"])

    def test_truncated_hdf5(self, make_comma):
        root = make_comma(4, self.STEER, self.PTR)
        cam = root / "camera" / "2016-01-30--11-24-51.h5"
        data = cam.read_bytes()
        cam.write_bytes(data[: len(data) // 3])
        with pytest.raises(PDNError, match=r"camera/2016-01-30--11-24-51\.h5: cannot open HDF5 file"):
            CommaAiDataset(root)

    def test_garbage_log(self, make_comma):
        root = make_comma(4, self.STEER, self.PTR)
        (root / "log" / "2016-01-30--11-24-51.h5").write_bytes(b"not hdf5 at all")
        with pytest.raises(PDNError, match=r"log/2016-01-30--11-24-51\.h5: cannot open HDF5 file"):
            CommaAiDataset(root)

    def test_missing_log_and_nan(self, make_comma):
        root = make_comma(4, self.STEER, self.PTR)
        (root / "log" / "2016-01-30--11-24-51.h5").unlink()
        with pytest.raises(PDNError, match=r"log/2016-01-30--11-24-51\.h5: missing"):
            CommaAiDataset(root)
        root = make_comma(4, [1.0, float("nan")], [0.0, 1.0])
        with pytest.raises(PDNError, match=r"\.h5: sample 1: steering_angle is not a finite number"):
            CommaAiDataset(root)

    def test_complex_log_refused_and_huge_pointers_ignored(self, make_comma):
        import warnings

        h5py = pytest.importorskip("h5py")
        root = make_comma(4, self.STEER, self.PTR)
        log = root / "log" / "2016-01-30--11-24-51.h5"
        with h5py.File(log, "r+") as f:
            del f["steering_angle"]
            f.create_dataset("steering_angle", data=np.asarray(self.STEER, np.complex64))
        with pytest.raises(PDNError, match=r"'steering_angle' holds complex64, expected real numbers"):
            CommaAiDataset(root)
        # A pointer far beyond int64 points at no frame: ignored like ptr 7, with no cast warning.
        root = make_comma(4, [100.0, 5.0], [0.0, 1e30])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = CommaAiDataset(root)
        assert len(ds) == 1

    def test_empty(self, make_comma):
        with pytest.raises(PDNError, match="empty"):
            CommaAiDataset(make_comma(2, [1.0, 2.0], [5.0, 6.0]))

    def test_without_h5py(self, make_comma, monkeypatch):
        root = make_comma(4, self.STEER, self.PTR)
        monkeypatch.setitem(sys.modules, "h5py", None)
        with pytest.raises(PDNError, match=r"pip install 'patchdrivenet\[h5\]'"):
            CommaAiDataset(root)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
class TestRegistry:
    def test_detect_every_format(self, make_sim, make_ch2, make_sully, make_comma, make_synth):
        cases = {
            "udacity-sim": make_sim([0.0]),
            "udacity-ch2": make_ch2([("center_camera", 0.0)]),
            "sullychen": make_sully([0.0]),
            "commaai": make_comma(2, [1.0], [0.0]),
            "synth": make_synth(),
        }
        for name, root in cases.items():
            assert detect_format(root) == name
            ds = open_dataset(root)
            assert isinstance(ds, FORMATS[name])
            assert_model_frame(ds.frame(0))
        assert detect_format(cases["udacity-sim"] / "driving_log.csv") == "udacity-sim"
        assert detect_format(cases["udacity-ch2"] / "interpolated.csv") == "udacity-ch2"
        assert detect_format(cases["sullychen"] / "data.txt") == "sullychen"
        assert detect_format(cases["synth"] / "images.npy") == "synth"
        assert detect_format(cases["commaai"] / "camera" / "2016-01-30--11-24-51.h5") == "commaai"

    def test_detect_errors(self, tmp_path, make_sim):
        with pytest.raises(PDNError, match="no such file"):
            detect_format(tmp_path / "nothing")
        with pytest.raises(PDNError, match=r"no known dataset here.*udacity-sim"):
            detect_format(tmp_path)
        root = make_sim([0.0])
        (root / "data.txt").write_text("0.jpg 0\n")
        with pytest.raises(PDNError, match="several formats"):
            detect_format(root)

    def test_open_dataset_options(self, make_sim, make_synth):
        root = make_sim([0.1])
        ds = open_dataset(root, format="udacity-sim", size=(33, 100), cameras=("center", "left"))
        assert len(ds) == 2 and ds.size == (33, 100)
        assert_model_frame(ds.frame(1), (33, 100))
        with pytest.raises(
            PDNError, match=r"unknown dataset format 'kitti'; valid formats: auto, synth, udacity-sim"
        ):
            open_dataset(root, format="kitti")
        with pytest.raises(PDNError, match="has no option 'steering_ratio'"):
            open_dataset(root, steering_ratio=15.0)
        synth = make_synth(size=(66, 200))
        assert isinstance(open_dataset(synth, size=(66, 200)), SynthDataset)
        with pytest.raises(PDNError, match="stored at 66x200"):
            open_dataset(synth, size=(33, 100))
        with pytest.raises(PDNError, match="takes no options"):
            open_dataset(synth, cameras=("center",))
