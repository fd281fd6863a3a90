"""What the benchmark subprocesses share: CPU time and peak memory of a process and its workers."""

# Peak memory: ru_maxrss cannot be used, since Linux carries it across fork and exec (every
# subprocess of a benchmark that built a 2 GB shard "peaks" at 2 GB: the old "0.00x the largest
# tensor"). A thread samples VmRSS of this process and of its worker processes every 10 ms; each
# process counts from the RSS it had when first seen (the caller: after imports, the import-torch
# floor; a forked worker: what it inherited), and the peaks are summed (an upper bound).
PRELUDE = """
import json, os, resource, sys, threading, time
import torch
path = sys.argv[1]
def usage():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
def children(pid):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.start_kb, self.peak_kb, self.stop = {}, {}, False
    def run(self):
        while not self.stop:
            for pid in [os.getpid(), *children(os.getpid())]:
                kb = rss_kb(pid)
                if kb is not None:
                    self.start_kb.setdefault(pid, kb)
                    self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), kb - self.start_kb[pid])
            time.sleep(0.01)
    def above_kb(self):
        self.stop = True
        self.join()
        return sum(self.peak_kb.values())
"""
