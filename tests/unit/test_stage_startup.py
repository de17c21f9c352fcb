"""What a stage pays before its work: a stage that only says it is skipped, and a config check that builds a model
on the meta device, must not import the heavy libraries (torch ~2 s, torchvision ~2 s more on a 2-core machine).
Each check runs in a fresh interpreter, where ``sys.modules`` shows what the code imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; which of the heavy modules it imported, and
    what it printed last (a JSON value)."""
    script = (f"import json, sys\n{code}\n"
              "print(json.dumps({'modules': {m: m in sys.modules for m in ('torch', 'torchvision', 'mlflow', 'ray')},"
              " 'result': result}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_sweep_or_gan_stage_outside_the_profile_decides_to_skip_without_torch():
    code = (
        "from pipelines.sources import load_params\n"
        "from pipelines.settings import gan_skip_reason, read\n"
        "from pipelines import sweep, gan, train  # the stages' own modules, as `python -m` imports them\n"
        "params = dict(load_params('params.yaml'), profile='demo')\n"
        "run_in = read(params, 'sweep').run_in\n"
        "outside = [n for n in read(params, 'sweep').combinations if n not in run_in.get('demo', [])]\n"
        "params['gan'] = dict(params['gan'], run_in={'demo': [], 'full': params['gan']['grid']})  # none in the demo\n"
        "result = [sweep.skip_reason(outside[0], params), gan_skip_reason(params, params['gan']['grid'][0])]\n")
    seen = _imported_after(code)
    sweep_reason, gan_reason = seen["result"]
    assert "not in profile 'demo'" in sweep_reason and "not in profile 'demo'" in gan_reason
    assert seen["modules"] == {"torch": False, "torchvision": False, "mlflow": False, "ray": False}


def test_a_randomly_initialised_encoder_does_not_import_torchvision():
    code = ("import torch\nfrom stylecore.encoders import VGGEncoder\n"
            "with torch.device('meta'):\n    VGGEncoder('vgg19', weights='random:0')\n"
            "result = VGGEncoder('vgg16', layers=['relu1_1'], weights='random:0').input_scale.flatten().tolist()\n")
    seen = _imported_after(code)
    assert seen["modules"]["torch"] and not seen["modules"]["torchvision"]
    # the ImageNet normalisation is still 1 / std (torchvision's documented std)
    assert [round(v, 5) for v in seen["result"]] == [round(1 / s, 5) for s in (0.229, 0.224, 0.225)]
