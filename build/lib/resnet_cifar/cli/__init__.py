"""The command line: every option declared once, the parser, each mode's command, --dry-run, resume
rules, summary."""
