#!/usr/bin/env python3
"""Self instructions per call by function, between two callgrind dumps (bench/callgrind-rls.sh):

  bench/cgdiff.py A B N[,NB] [TOP] [BOTTOM]

(NB: B's number of calls when it differs from A's) prints the functions that cost more in B than in A (per call, N calls each), then those that cost
less. Names are normalised (call counts and object files dropped) so two builds compare."""
import re,collections,subprocess,sys
def load(p):
    out=subprocess.run(["callgrind_annotate","--threshold=100","--auto=no","--inclusive=no",p],capture_output=True,text=True).stdout
    d=collections.Counter(); started=False
    for line in out.splitlines():
        if "file:function" in line: started=True; continue
        if not started: continue
        m=re.match(r"\s*([0-9,]+)\s+(\([^)]*\)\s+)?(.*)$",line)
        if not m: continue
        f=m.group(3); f=re.sub(r" \[[^\]]*\]$","",f); f=re.sub(r" \([0-9,]+x\)$","",f)
        f=f.split(":",1)[1] if re.match(r"^[^ ]*\.rs:|^\./|^/",f) and ":" in f else f
        d[f]+=int(m.group(1).replace(",",""))
    return d
a=load(sys.argv[1]); b=load(sys.argv[2]); counts=sys.argv[3].split(",")
NA=int(counts[0]); NB=int(counts[-1]); top=int(sys.argv[4]) if len(sys.argv)>4 else 40
print("total self per call: A",sum(a.values())//NA,"B",sum(b.values())//NB)
diff=sorted(((b[k]/NB-a[k]/NA,k) for k in set(a)|set(b)),reverse=True)
for d,k in diff[:top]: print(f"{d:8.0f}  A {a[k]/NA:7.0f} B {b[k]/NB:7.0f}  {k[:160]}")
print("...")
for d,k in diff[-int(sys.argv[5]) if len(sys.argv)>5 else -12:]: print(f"{d:8.0f}  A {a[k]/NA:7.0f} B {b[k]/NB:7.0f}  {k[:160]}")
