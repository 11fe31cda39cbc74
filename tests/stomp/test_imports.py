import subprocess
import sys


def test_codec_imports_without_django():
    code = "import sys, randomchat.stomp; print(any(m.split('.')[0] in ('django', 'channels') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
