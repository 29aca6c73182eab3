"""``ss4d-app`` without a browser: upload handling, the bounded temp folder, error messages and one
generation through ``run_generate`` (the browser test, ``test_app_browser.py``, drives the page)."""
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytest.importorskip("gradio", reason="the 'app' extra is not installed (pip install -e .[app])")

from ss4d.app import TINY_LABEL, AppConfig, AppError, RunStore, build_app, build_parser, input_path, run_generate  # noqa: E402
from ss4d.tiny import write_tiny_video_to_4d  # noqa: E402

CLIP = REPO / "assets" / "dancing_robot_fg.mp4"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_input_path_video_frames_and_errors(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert input_path([str(CLIP)], run) == str(CLIP)
    names = ["f10.png", "f2.png", "f1.png"]
    for i, n in enumerate(names):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / n)
    folder = input_path([str(tmp_path / n) for n in names], run)
    # natural order: f1, f2, f10 -> 0.png, 1.png, 2.png
    assert [np.asarray(Image.open(f"{folder}/{i}.png"))[0, 0, 0] for i in range(3)] == [2, 1, 0]
    with pytest.raises(AppError, match="Upload a video"):
        input_path([], run)
    with pytest.raises(AppError, match="at least 2 frames"):
        input_path([str(tmp_path / "f1.png")], run)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(AppError, match="notes.txt"):
        input_path([str(tmp_path / "notes.txt")], run)


def test_run_store_is_bounded_and_forgets_visitors(tmp_path):
    store = RunStore(tmp_path, max_runs=2)
    a1 = store.new_run("a")
    b1 = store.new_run("b")
    a2 = store.new_run("a")                 # a third run: the oldest (a1) goes
    assert not a1.exists() and b1.exists() and a2.exists()
    assert len(list(tmp_path.glob("run-*"))) == 2
    store.end_session("a")                  # visitor a closed the page
    assert not a2.exists() and b1.exists()


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    tiny = write_tiny_video_to_4d(str(base / "tiny_ss4d"))
    return AppConfig(models={TINY_LABEL: tiny}, store=RunStore(base / "work", max_runs=3), device="cpu", threads=1)


def test_bad_video_is_a_clean_message(config, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 20)
    with pytest.raises(AppError) as e:
        run_generate(config, [str(bad)], TINY_LABEL, 2, 1, 2, 0, 64, [], session="s")
    msg = str(e.value)
    assert msg.startswith("Cannot decode broken.mp4") and str(tmp_path) not in msg and "Traceback" not in msg


def test_unknown_model_is_a_message(config):
    with pytest.raises(AppError, match="Unknown model"):
        run_generate(config, [str(CLIP)], "nope", 2, 1, 2, 0, 64, [], session="s")


def test_run_generate_tiny(config):
    out = run_generate(config, [str(CLIP)], TINY_LABEL, 2, 8, 2, 7, 64, ["splat"], session="s")
    names = [p.rsplit("/", 1)[-1] for p in out["downloads"]]
    assert names == ["gaussians_ply.zip", "splat.zip", "result.json"]
    result = json.loads(open(out["downloads"][-1]).read())
    assert result["seed"] == 7 and result["num_frames"] == 2 and result["sampler"]
    with zipfile.ZipFile(out["downloads"][0]) as z:
        assert sorted(z.namelist()) == ["gaussians/frame_000.ply", "gaussians/frame_001.ply"]
    for key in ("input_video", "turntable", "novel"):
        assert open(out[key], "rb").read(12)[4:8] == b"ftyp", key    # an mp4
    assert out["glb"] is None and len(out["gaussians"]) == 2


def test_page_builds_and_parser_defaults(config):
    demo = build_app(config)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"ss4d-upload", "ss4d-generate", "ss4d-turntable", "ss4d-novel", "ss4d-downloads"} <= ids
    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.concurrency == 1


def test_concurrent_visitors_are_queued(config, monkeypatch):
    """Two visitors click at once: with the default concurrency of 1 the second generation starts only
    after the first ended (the generation is replaced by a 1.5 s stand-in that then fails)."""
    import socket
    import threading
    import time

    from gradio_client import Client

    import ss4d.app as app

    state = {"running": 0, "max": 0, "calls": 0}
    lock = threading.Lock()

    def slow(*args, **kwargs):
        with lock:
            state["running"] += 1
            state["calls"] += 1
            state["max"] = max(state["max"], state["running"])
        time.sleep(1.5)
        with lock:
            state["running"] -= 1
        raise AppError("stand-in generation")

    monkeypatch.setattr(app, "run_generate", slow)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.serve(config, "127.0.0.1", port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        jobs = [client.submit(None, TINY_LABEL, 2, 1, 0, 0, 64, [], api_name="/generate") for _ in range(2)]
        for job in jobs:
            with pytest.raises(Exception, match="stand-in generation"):
                job.result(timeout=60)
    finally:
        demo.close()
    assert state == {"running": 0, "max": 1, "calls": 2}
