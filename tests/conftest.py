import os

import pytest
import torch

# Ray Train's controller polls its workers this often (jobs/train.py: 0.25 s unless set); a
# worker's next report waits for the poll, which is most of an epoch of the tests' tiny runs.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.05")
# Ray Train's preemption watcher (an actor per run that polls Ray for nodes being drained,
# as spot instances are) has nothing to watch on this one machine: a process fewer per run.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Two of Ray's daemons, sized for a long session of short jobs: the dashboard agent's node
# stats (psutil over every worker process) every 60 s instead of 5 (no test reads them), and
# the log monitor's scan of the log folder for new files every 0.5 s instead of on each
# 0.1 s pass (under 1000 files). In a CPU account of the suite they were 180 of 2270 CPU-s.
# Every Ray the tests start (theirs and their subprocesses') reads them from the environment.
os.environ.setdefault("REPORTER_UPDATE_INTERVAL_MS", "60000")
os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")

from models import build_bpe_tokenizer

CORPUS = [
    "a red circle moves to the left",
    "a blue square moves up",
    "a green triangle moves to the right",
    "what instrument is being used",
    "where is the suction located",
    "how many tools are there",
    "what is the surgical phase",
] * 5


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return build_bpe_tokenizer(CORPUS, vocab_size=300, style="gpt2")


@pytest.fixture(scope="session")
def clip_tokenizer():
    return build_bpe_tokenizer(CORPUS, vocab_size=300, style="clip")


@pytest.fixture(scope="session")
def ray_cluster():
    """The one real Ray instance of the test session: a head node with 2 CPUs, started with
    ``ray.cluster_utils.Cluster`` so that tests can add worker nodes (``worker_nodes``)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            "object_store_memory": 2 * 1024**3,
            # Metrics reach Ray's endpoint within a second (10 s by default): tests/serve/test_service_metrics.py.
            # Up to 12 idle worker processes are kept (2 by default, one per CPU): the jobs the
            # tests run in this process reuse the ones that have imported torch and
            # transformers for Ray Data's and the encoder's tasks (suite 1916 -> 1623 s).
            "_system_config": {"metrics_report_interval_ms": 1000, "num_workers_soft_limit": 12},
        },
    )
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_local(ray_cluster):
    """The session's Ray (a single head node unless a test adds nodes)."""
    import ray

    return ray


@pytest.fixture
def worker_nodes(ray_cluster):
    """Two worker nodes (1 CPU each) joined to the session's cluster for one test; a test
    may remove one (``ray_cluster.remove_node``) to play a lost machine."""
    nodes = [ray_cluster.add_node(num_cpus=1, object_store_memory=512 * 1024**2) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    yield nodes
    for node in nodes:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """``--synthetic_dir`` of the training-job tests: the corpus and its decoded clips are made
    by the first job that needs them and reused by the rest."""
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def synthetic_msrvtt(tmp_path_factory):
    from ingest.synthetic import make_msrvtt

    return make_msrvtt(
        tmp_path_factory.mktemp("msrvtt"), num_train=12, num_test=6, seconds=4, fps=8
    )


@pytest.fixture(scope="session")
def packed_run(ray_local, synthetic_dir, tmp_path_factory):
    """One training run that three tests read: 2 Ray Train workers packed on one node (the
    head), 2 epochs of the WTI retriever, one worker killed at step 15 (in epoch 2) and
    recovered, no index. ``test_train_job.py`` checks the recovery and the evaluate CLI on
    it; ``test_cluster_nodes.py`` compares its first epoch with the same 2 workers spread
    over two nodes; ``test_reproducible.py`` compares it with the same command unbroken."""
    from helpers import packed_args

    from jobs import train

    out = tmp_path_factory.mktemp("packed") / "run"
    code = train.main(
        packed_args(synthetic_dir, out, "--inject_failure", "15", "--max_failures", "1")
    )
    return code, out


@pytest.fixture(scope="session")
def endo18_run(ray_local, tmp_path_factory):
    """One PitVQANet run that two tests read: the EndoVis18-VQA layout from disk, 2 Ray Train
    workers, 1 epoch, seed 7, no MLflow. ``test_train_job.py`` checks what it trained and
    evaluated; ``test_reproducible.py`` runs the same command again and compares."""
    from ingest.synthetic import make_endo18
    from jobs import train

    folder = tmp_path_factory.mktemp("endo18")
    root = make_endo18(folder / "endo18", frames=8)  # about 350 training questions
    argv = [
        "--dataset",
        "endo18",
        "--data_root",
        str(root),
        "--epochs",
        "1",
        "--batch_size",
        "16",
        "--n_display",
        "0",
        "--image_size",
        "32",
        "--num_workers",
        "2",
        "--seed",
        "7",
        "--no-mlflow",
    ]
    out = folder / "run"
    return train.main([*argv, "--output_dir", str(out)]), out, argv, root
