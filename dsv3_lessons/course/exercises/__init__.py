"""Exercise checkers, one module per chapter (``ch01_kv_cache`` …), all on the pattern of
:mod:`dsv3_lessons.course.checking`: never raise; print "not attempted yet" + a hint, a ✗ diagnosis, or ✓."""
