"""Random packet loss on the way into a namespace's interfaces, for kernel tests.

  python lossy.py PERMILLE DEV [DEV...]

Run inside a namespace (nsenter): a TC ingress program on each DEV drops PERMILLE in
1000 packets at random, data and ACKs alike, so the senders on the far side really
retransmit (loss on a sender's own egress would only be requeued by its TCP and never
counted as a retransmission). The kernel has no netem here; this is the same thing
for loss. Prints ``ready`` once attached; on SIGTERM detaches and prints one JSON line
{"seen": N, "dropped": M}.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from bcc import BPF
from pyroute2 import IPRoute

PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
BPF_PERCPU_ARRAY(lossy_counts, u64, 2);   /* 0: seen, 1: dropped */
int lossy_ingress(struct __sk_buff *skb)
{
	int k = bpf_get_prandom_u32() % 1000 < PERMILLE;
	u64 *c = lossy_counts.lookup(&k);
	if (c)
		*c += 1;
	return k ? TC_ACT_SHOT : TC_ACT_OK;
}
"""


def main(argv: list[str]) -> int:
    permille, devs = int(argv[0]), argv[1:]
    bpf = BPF(text=PROGRAM, cflags=[f"-DPERMILLE={permille}"])
    fn = bpf.load_func("lossy_ingress", BPF.SCHED_CLS)
    ipr = IPRoute()
    indexes = [ipr.link_lookup(ifname=d)[0] for d in devs]
    for idx in indexes:
        ipr.tc("add", "clsact", idx)
        ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name=fn.name, parent="ffff:fff2",
               classid=1, direct_action=True)
    print("ready", flush=True)

    def stop(*_: object) -> None:
        for idx in indexes:
            ipr.tc("del", "clsact", idx)
        counts = bpf["lossy_counts"]
        print(json.dumps({"seen": sum(counts[0]) + sum(counts[1]), "dropped": sum(counts[1])}),
              flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
