""" Validation results as timm's ``validate.py`` prints and writes them: a ``--result`` JSON block, JSON or CSV files"""
import csv
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

__all__ = ['parse_result', 'write_result_file']


def parse_result(stdout: str) -> Optional[Dict[str, Any]]:
    """The result dict that a validator prints after a ``--result`` line, or None."""
    idx = stdout.rfind('--result')
    if idx < 0:
        return None
    try:
        result, _ = json.JSONDecoder().raw_decode(stdout[idx + len('--result'):].lstrip())
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


def write_result_file(path: Union[str, Path], result: Dict[str, Any], fmt: str = 'csv') -> Path:
    """Write ``result`` as indented JSON (``fmt='json'``) or as CSV with a header row (lists as JSON text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='') as f:
        if fmt == 'json':
            json.dump(result, f, indent=4)
            f.write('\n')
        else:
            writer = csv.DictWriter(f, fieldnames=list(result))
            writer.writeheader()
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in result.items()})
    return path
