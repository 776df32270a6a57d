#!/usr/bin/env python3
"""Deletes the test and binary executables a build no longer makes from target/<profile>/deps.

CI keeps target/ between runs on one machine, and every commit that changes a crate leaves a new
executable (one per test file and binary, tens of megabytes each) beside the old ones, which no
build reads again: a few dozen runs fill a disk. Cargo names the artefacts it makes or finds
fresh in its JSON messages (`--message-format=json`), so this keeps exactly those (and the files
they are hard links of) and deletes every other executable in the deps folders.

Usage: sweep-target.py TARGET_DIR MESSAGES.json...  (the messages of every build of this run)
Prints what it freed. Libraries (.rlib, .rmeta) are left alone: they are an order of magnitude
smaller and a later build may want them back.
"""
import json
import os
import stat
import sys


def artefacts(paths):
    """The inodes of every file cargo reported making, fresh or rebuilt."""
    keep = set()
    for path in paths:
        with open(path, encoding="utf-8") as messages:
            for line in messages:
                if not line.startswith("{"):
                    continue
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if message.get("reason") != "compiler-artifact":
                    continue
                files = list(message.get("filenames") or [])
                if message.get("executable"):
                    files.append(message["executable"])
                for f in files:
                    try:
                        st = os.stat(f)
                    except OSError:
                        continue
                    keep.add((st.st_dev, st.st_ino))
    return keep


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: sweep-target.py TARGET_DIR MESSAGES.json...")
    target, messages = sys.argv[1], sys.argv[2:]
    keep = artefacts(messages)
    if not keep:
        # No artefact named: the messages are not what we think, so delete nothing.
        sys.exit(f"sweep-target: no compiler-artifact messages in {messages}; nothing swept")
    freed = count = 0
    for profile in ("debug", "release"):  # not target/fuzz: its own builds, not named here
        deps = os.path.join(target, profile, "deps")
        if not os.path.isdir(deps):
            continue
        for entry in os.scandir(deps):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
                continue
            if entry.name.endswith((".so", ".rlib", ".rmeta", ".d")):
                continue  # proc-macro libraries are executable too; they stay
            if (st.st_dev, st.st_ino) in keep:
                continue
            os.unlink(entry.path)
            freed += st.st_blocks * 512
            count += 1
    print(f"sweep-target: {count} stale executables deleted, {freed / 2**30:.1f} GiB freed")


if __name__ == "__main__":
    main()
