#!/bin/sh
# Build a wheel of every dependency of Motus into devnet/wheelhouse/, on this machine, so
# that the image then builds with no network (docs/docker.md, "Offline build"). The wheels
# must fit the image: CPython 3.11 on Linux x86_64 with a C library no newer than the
# image's (glibc 2.36, Debian bookworm); fastecdsa is compiled here, against libgmp-dev.
#   devnet/docker/wheels.sh          (PYTHON=python3.11 by default)
set -eu
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3.11}
"$py" - <<'PYEOF'
import platform, sys
glibc = platform.libc_ver()
ok = (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
      and platform.system() == "Linux" and platform.machine() == "x86_64"
      and glibc[0] == "glibc" and tuple(map(int, glibc[1].split("."))) <= (2, 36))
if not ok:
    sys.exit(f"wheels.sh: needs CPython 3.11 on Linux x86_64 with glibc <= 2.36, not "
             f"{platform.python_implementation()} {platform.python_version()} on "
             f"{platform.system()} {platform.machine()} {glibc}: build with the network "
             f"instead (docs/docker.md)")
PYEOF
out=devnet/wheelhouse
rm -f "$out"/*.whl
# setuptools and wheel: the image builds Motus itself from its source, offline.
"$py" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$out" . 'setuptools>=68' wheel
rm -f "$out"/motus-*.whl
echo "wheels.sh: $(ls "$out"/*.whl | wc -l) wheels in $out"
