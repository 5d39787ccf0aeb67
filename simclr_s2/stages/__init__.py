"""One use case per entry point: `resolve` what `auto` stands for, then `execute` inside the step's run.
Entry points, the grid and tuning all call them through `base.run_command` / `base.ensure_step`."""
