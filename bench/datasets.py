"""The benchmark's data sets, generated once and cached outside the repository.

Each set lives in ``CACHE/<name>-<hash of its parameters>/`` and counts as built only
when its ``.complete`` stamp exists, so an interrupted generation is redone, a change of
parameters makes a new folder, and a second benchmark run starts at once. The sets are
read-only inputs: scenarios that change files (the delta pass) undo their changes.

* ``mixed``: server-like data: files copied from ``/usr`` (sorted walk, up to a byte
  budget, symlinks kept), large incompressible files (``os.urandom``) and large
  compressible files (text and code from ``/usr/share`` and ``/usr/lib/python3*``
  shuffled in 64 KiB pieces: about 4:1 with zstd, like logs and dumps).
* ``small``: ``count`` files of 1-8 KiB, 1000 to a folder.
* ``tiny``: many files of 256 B - 2 KiB for the footprint at a million files.
* ``random`` / ``text``: a few large files of one kind (shaped link, bandwidth limit).
"""

import hashlib
import json
import os
import random
import shutil
import stat

CACHE = os.environ.get("GO2ALIYUN_BENCH_CACHE", "/var/cache/go2aliyun/bench")
STAMP = ".complete"
MiB = 1024 * 1024
PIECE = 64 * 1024
POOL_SOURCES = ("/usr/share/doc", "/usr/share/man", "/usr/lib/python3", "/usr/include",
                "/usr/share/perl", "/usr/share/perl5")


def _key(name, params):
    blob = json.dumps([name, params], sort_keys=True).encode()
    return "%s-%s" % (name, hashlib.sha256(blob).hexdigest()[:12])


def ensure(name, **params):
    """The folder of the data set ``name`` with ``params``; generated when missing."""
    path = os.path.join(CACHE, _key(name, params))
    if os.path.exists(os.path.join(path, STAMP)):
        return path
    if os.path.exists(path):
        shutil.rmtree(path)
    tmp = path + ".building"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    GENERATORS[name](tmp, **params)
    with open(os.path.join(tmp, STAMP), "w") as f:
        json.dump({"name": name, "params": params}, f)
    os.rename(tmp, path)
    return path


def data_files(root):
    """Regular files of a set, sorted, the stamp left out."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            if p != os.path.join(root, STAMP) and stat.S_ISREG(os.lstat(p).st_mode):
                out.append(p)
    return out


def size_of(root):
    """(bytes, files) of a set: regular files' sizes and every entry counted."""
    total = entries = 0
    for dirpath, dirs, files in os.walk(root):
        entries += len(dirs)
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            entries += 1
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total, entries


# ----------------------------------------------------------------- generators

def _copy_usr(dest, budget):
    """Copy /usr in sorted order until ``budget`` bytes are copied."""
    done = 0
    for dirpath, dirs, files in os.walk("/usr"):
        dirs.sort()
        rel = os.path.relpath(dirpath, "/")
        out = os.path.join(dest, rel)
        os.makedirs(out, exist_ok=True)
        for f in sorted(files):
            src = os.path.join(dirpath, f)
            dst = os.path.join(out, f)
            try:
                st = os.lstat(src)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(src, dst)
                    done += st.st_size
            except OSError:
                continue
            if done >= budget:
                return done
    return done


def text_pool(limit=64 * MiB):
    """Real text and code from this machine, in ``PIECE`` chunks."""
    pieces = []
    size = 0
    for top in POOL_SOURCES:
        for dirpath, dirs, files in os.walk(top):
            dirs.sort()
            for f in sorted(files):
                if f.endswith((".gz", ".xz", ".bz2", ".zst", ".png", ".pyc")):
                    continue
                p = os.path.join(dirpath, f)
                try:
                    if not stat.S_ISREG(os.lstat(p).st_mode):
                        continue
                    with open(p, "rb") as fh:
                        data = fh.read(1024 * 1024)
                except OSError:
                    continue
                for i in range(0, len(data), PIECE):
                    pieces.append(data[i:i + PIECE])
                    size += len(pieces[-1])
                if size >= limit:
                    return pieces
    return pieces


def write_random(path, size):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


def write_text(path, size, pool, rng):
    with open(path, "wb") as f:
        left = size
        buf = []
        while left > 0:
            piece = pool[rng.randrange(len(pool))][:left]
            buf.append(piece)
            left -= len(piece)
            if len(buf) >= 64:
                f.write(b"".join(buf))
                buf = []
        f.write(b"".join(buf))


def gen_mixed(dest, usr_bytes, random_files, text_files, big_size):
    _copy_usr(dest, usr_bytes)
    rng = random.Random(1)  # noqa: S311 - test data
    os.makedirs(os.path.join(dest, "srv", "blobs"))
    os.makedirs(os.path.join(dest, "var", "dumps"))
    for i in range(random_files):
        write_random(os.path.join(dest, "srv", "blobs", "blob-%02d.bin" % i), big_size)
    pool = text_pool() if text_files else []
    for i in range(text_files):
        write_text(os.path.join(dest, "var", "dumps", "dump-%02d.sql" % i), big_size, pool,
                   rng)


def gen_small(dest, count, low=1024, high=8192, per_dir=1000):
    rng = random.Random(2)  # noqa: S311 - test data
    noise = os.urandom(8 * MiB)
    top = os.path.join(dest, "home")
    for i in range(count):
        if i % per_dir == 0:
            folder = os.path.join(top, "d%04d" % (i // per_dir))
            os.makedirs(folder)
        size = rng.randint(low, high)
        at = rng.randrange(len(noise) - size)
        with open(os.path.join(folder, "f%06d" % i), "wb") as f:
            f.write(noise[at:at + size])


def gen_tiny(dest, count):
    gen_small(dest, count, low=256, high=2048)


def gen_random(dest, files, size):
    for i in range(files):
        write_random(os.path.join(dest, "random-%02d.bin" % i), size)


def gen_text(dest, files, size):
    pool = text_pool()
    rng = random.Random(3)  # noqa: S311 - test data
    for i in range(files):
        write_text(os.path.join(dest, "text-%02d.log" % i), size, pool, rng)


GENERATORS = {"mixed": gen_mixed, "small": gen_small, "tiny": gen_tiny,
              "random": gen_random, "text": gen_text}


# ----------------------------------------------------------------- the delta

def change_some(root, fraction=0.01, seed=4):
    """Change ``fraction`` of the regular files of ``root`` in place (16 bytes in the
    middle, mtime + 1 s). Returns what :func:`undo_changes` needs to restore them."""
    files = data_files(root)
    rng = random.Random(seed)  # noqa: S311 - test data
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    undo = []
    for p in chosen:
        st = os.stat(p)
        at = st.st_size // 2
        with open(p, "r+b") as f:
            f.seek(at)
            old = f.read(16)
            f.seek(at)
            f.write(bytes((b ^ 0xFF) for b in old) or b"x")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
        undo.append((p, at, old, st.st_size, st.st_atime_ns, st.st_mtime_ns))
    return undo


def undo_changes(undo):
    for p, at, old, size, atime, mtime in undo:
        with open(p, "r+b") as f:
            f.seek(at)
            f.write(old)
            f.truncate(size)
        os.utime(p, ns=(atime, mtime))
