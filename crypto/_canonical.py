"""RFC 8785 (JCS) canonical JSON, through the maintained `rfc8785` library."""

from __future__ import annotations

import rfc8785

from crypto._errors import CanonicalizationError


def canonical_json(obj: object) -> bytes:
    """The RFC 8785 bytes of `obj`; raises CanonicalizationError if it has none."""
    try:
        return rfc8785.dumps(obj)  # type: ignore[arg-type]
    except rfc8785.CanonicalizationError as error:
        raise CanonicalizationError(str(error)) from error
