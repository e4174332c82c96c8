"""Validate every XML feed under a directory with the W3C Feed Validator and feedparser.

usage: FEEDVALIDATOR_SRC=/path/to/feedvalidator/src w3c-validate.py FEEDS_DIR PUBLIC_BASE_URL

Every error, warning and note counts. The validator is a separate checkout
(https://github.com/w3c/feedvalidator, with `pip install lxml html5lib rdflib feedparser`);
it is not part of herold and not run in CI."""
import os, sys
sys.path.insert(0, os.environ.get('FEEDVALIDATOR_SRC', 'feedvalidator/src'))
import feedvalidator, feedparser
from feedvalidator.formatter.text_plain import Formatter

root, base = sys.argv[1], sys.argv[2].rstrip('/')
bad = 0
for d, _, files in os.walk(root):
    for f in sorted(files):
        if not f.endswith('.xml'):
            continue
        path = os.path.join(d, f)
        rel = os.path.relpath(path, root)
        url = base + '/' + rel
        events = feedvalidator.validateStream(open(path, 'rb'), firstOccurrenceOnly=1, base=url)['loggedEvents']
        # every event counts: errors, warnings and notes
        from feedvalidator import logging as L
        events = [e for e in events if isinstance(e, (L.Error, L.Warning, L.Info))]
        msgs = Formatter(events)
        fp = feedparser.parse(open(path, 'rb').read())
        if msgs or fp.bozo:
            bad += 1
            print('==', rel)
            for m in msgs: print('  ', m)
            if fp.bozo: print('   feedparser bozo:', fp.bozo_exception)
print('validated; files with findings:', bad)
sys.exit(1 if bad else 0)
