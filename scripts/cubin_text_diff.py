#!/usr/bin/env python3
"""Compare the kernels' machine code of two cubins, section by section.

usage: scripts/cubin_text_diff.py OLD.cubin NEW.cubin [--rename FROM=TO ...]

A refactor of a measured kernel should leave its code alone; this says whether it did without a GPU
(and without cuobjdump): it reads each ELF's `.text.<kernel>` sections and prints, per kernel, `same`,
`DIFF` (with both sizes), or which side lacks it. Other sections (.nv.info, line tables) are ignored:
they move with source lines. --rename maps a mangled-name fragment of NEW to OLD's (a template parameter
added with a default, e.g. --rename ELi2EEv=EEv). Exit status 1 when any kernel differs or is missing.

Make the cubins with the build's nvcc flags, e.g.
  nvcc -DDSA_HAVE_CUDA -I. -I/usr/include/hdf5/serial -O3 -std=c++17 --expt-relaxed-constexpr \\
       -gencode=arch=compute_90a,code=sm_90a -cubin -o new.cubin kernels/cuda/dsa_score_wgmma_cuda.cu
and the old one the same way from a checkout (or `git stash`) of the previous tree.
"""
import argparse
import struct
import sys


def text_sections(path):
    """{section name: bytes} of the .text.* sections of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):  # name offset, type, offset, size
        name, typ, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, typ, off, size

    _, _, str_off, str_size = header(shstrndx)
    names = data[str_off:str_off + str_size]
    out = {}
    for i in range(shnum):
        name_off, typ, off, size = header(i)
        name = names[name_off:names.index(b"\0", name_off)].decode()
        if name.startswith(".text."):
            out[name] = data[off:off + size] if typ != 8 else b""  # 8: SHT_NOBITS
    return out


def main(argv):
    ap = argparse.ArgumentParser(description="Compare the kernels' machine code of two cubins.")
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rename", action="append", default=[], metavar="FROM=TO",
                    help="replace FROM by TO in NEW's kernel names before matching them with OLD's")
    a = ap.parse_args(argv[1:])
    renames = []
    for r in a.rename:
        src, eq, dst = r.partition("=")
        if not eq or not src:
            ap.error(f"--rename {r!r}: expected FROM=TO")
        renames.append((src, dst))
    old = text_sections(a.old)
    new = {}
    for name, code in text_sections(a.new).items():
        for src, dst in renames:
            name = name.replace(src, dst)
        new[name] = code
    bad = 0
    for name in sorted(set(old) | set(new)):
        kernel = name[len(".text."):]
        if name not in new or name not in old:
            print(f"{'only old' if name in old else 'only new'} {kernel}")
            bad += 1
        elif old[name] == new[name]:
            print(f"same {kernel} ({len(old[name])} bytes)")
        else:
            print(f"DIFF {kernel} ({len(old[name])} -> {len(new[name])} bytes)")
            bad += 1
    print(f"{len(set(old) | set(new))} kernels, {bad} differ or missing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
