"""The two views of a corpus split every stage shares: paragraphs (records as stored) and documents
(consecutive records of one `doc` joined). Both are normalized by the language and cut by characters.

Expansion counts pieces of text, so it reads paragraphs; everything that reads text in context as a
model does (initializers, pretraining, bits per character) reads documents.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from xlang.spec import LanguageSpec


def take_chars(texts: Iterable[str], max_chars: int | None) -> list[str]:
    """The first ``max_chars`` characters of the texts, in order, cutting the last one short.

    Both models of a comparison must see exactly the same characters; the cut is by characters, never by
    tokens, for that reason. Empty texts are dropped.
    """
    taken: list[str] = []
    left = math.inf if max_chars is None else max_chars
    for text in texts:
        if left <= 0:
            break
        if not text:
            continue
        piece = text if len(text) <= left else text[: int(left)]
        taken.append(piece)
        left -= len(piece)
    return taken


def join_documents(records: Iterable[Mapping[str, Any]], field: str = "text", doc_field: str = "doc") -> list[str]:
    """Paragraph records -> documents: consecutive records with the same ``doc`` joined by newlines.

    Corpora store one paragraph per record; read one by one, short paragraphs would be read without
    context. Records without ``doc_field`` are documents of their own.
    """
    documents: list[str] = []
    current_key: object = None
    for record in records:
        text = record[field] if isinstance(record[field], str) else ""
        key = record.get(doc_field) if hasattr(record, "get") else None
        if documents and key is not None and key == current_key:
            documents[-1] += "\n" + text
        else:
            documents.append(text)
        current_key = key
    return [document for document in documents if document]


def paragraphs(records: Iterable[Mapping[str, Any]], language: LanguageSpec, max_chars: int | None = None) -> list[str]:
    """The records' texts as stored, normalized by ``language``, empty ones dropped."""
    texts = (language.normalize(r["text"]) for r in records if isinstance(r["text"], str) and r["text"].strip())
    return take_chars(texts, max_chars)


def documents(records: Iterable[Mapping[str, Any]], language: LanguageSpec, max_chars: int | None = None) -> list[str]:
    """Whole documents (paragraphs of one `doc` joined), normalized by ``language``, first ``max_chars``."""
    return take_chars((language.normalize(text) for text in join_documents(records)), max_chars)
