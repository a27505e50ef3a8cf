#!/usr/bin/env python3
"""Functions under crates/*/src longer than 60 lines (signature to closing brace), longest first.

A rough reader of Rust text (it counts braces outside strings and comments), enough to find the functions that
want splitting; `python3 scripts/fn_lengths.py [PATH_PREFIX]`.
"""
import re,sys,glob
pat=re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
res=[]
prefix = sys.argv[1] if len(sys.argv) > 1 else ''
for f in sorted(glob.glob('crates/*/src/**/*.rs',recursive=True)):
    if not f.startswith(prefix): continue
    lines=open(f).read().split('\n')
    i=0
    # skip test modules
    while i<len(lines):
        m=pat.match(lines[i])
        if m and not lines[i].rstrip().endswith(';'):
            name=m.group(6); depth=0; started=False; j=i
            while j<len(lines):
                s=re.sub(r'"(\\.|[^"\\])*"','""',lines[j]); s=re.sub(r'//.*','',s)
                depth+=s.count('{')-s.count('}')
                if '{' in s: started=True
                if started and depth<=0: break
                j+=1
            n=j-i+1
            res.append((n,f,i+1,name))
        i+=1
res.sort(reverse=True)
over60=[r for r in res if r[0]>60]; over100=[r for r in res if r[0]>100]
print(len(over60),'over 60;',len(over100),'over 100')
for r in over60: print(*r)
