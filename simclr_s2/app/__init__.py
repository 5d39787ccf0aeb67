"""The front door: `python -m simclr_s2 <entry point>`, its command line and exit statuses, and the files
generated from the entry points (MLproject, the manual's parameter tables). The top floor: nothing below
imports it."""
