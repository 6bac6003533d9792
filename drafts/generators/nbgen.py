"""Tiny helper to write notebooks from a list of (kind, source, meta) with stable ids."""
import nbformat as nbf


def build(cells, prefix, path, nb_meta=None):
    nb = nbf.v4.new_notebook()
    out = []
    for i, c in enumerate(cells):
        kind, src = c[0], c[1]
        meta = c[2] if len(c) > 2 else {}
        src = src.strip("\n")
        if kind == "md":
            cell = nbf.v4.new_markdown_cell(src)
        else:
            cell = nbf.v4.new_code_cell(src)
        cell.id = f"{prefix}-{i:02d}"
        cell.metadata.update(meta)
        out.append(cell)
    nb.cells = out
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    if nb_meta:
        nb.metadata.update(nb_meta)
    nbf.write(nb, path)
