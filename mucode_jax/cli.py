"""Flag parsing for the launchers: a ``--config.<field>=...`` override that names no field of
the config is one sentence, not ml_collections' ``AttributeError: "'field'"`` traceback."""

from __future__ import annotations

import re
import sys


def parse_flags(argv: list[str]) -> list[str]:
    """`absl.app.run`'s ``flags_parser``: absl's own parsing and messages, plus one sentence
    (exit status 1) for an override of a field the config does not have."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # absl's own: the message it would print
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help.")
    except (AttributeError, KeyError) as e:
        text = str(e)
        m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)", text)
        key = m.group(1) if m else text
        hint = re.search(r'Did you mean "([^"]+)"', text)
        named = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
        culprit = next((a for a in named if key in a.split(".")), None)
        where = culprit or f"a --config override (field {key!r})"
        fix = f"did you mean {hint.group(1)!r}?" if hint else "check its spelling in the config."
        sys.exit(f"error: {where} names no field of the config; {fix}")
