"""The Lab server's log, after the chapters were opened, run and saved: no "Notebook … is not trusted" for the
course's notebooks (``make lab`` and the suite run ``jupyter trust`` on them; the server signs what it saves)."""
import time
import urllib.parse


def test_no_trust_warnings(lab):
    for nb in lab.notebooks:  # a GET is where the server checks a notebook's signature
        lab.api("GET", "/api/contents/" + urllib.parse.quote(nb.relative_to(lab.root).as_posix()) + "?content=1")
    time.sleep(0.5)
    warnings = [line for line in lab.log().splitlines() if "is not trusted" in line]
    assert not warnings, "\n".join(warnings)
