"""Breach response: a leaked file traced to its patients and its source, the incident register with
each lab's 72-hour clock, the processor's notices, the Art. 33 drafts and the Art. 34 letters.

- ``reader``: a leaked file of any layout (CSV/TSV of unknown dialect and encoding, XLSX, ndjson,
  an SQL dump's text; ragged rows, a header or none) read as rows, its columns recognised.
- ``analyze``: rows matched through every lab's blind indexes (``labvault.access.breach``), the
  categories exposed and the probable source package.
- ``incidents``, ``severity``, ``notices``, ``letters``: the register, the ENISA score, what is
  told to each lab and to the authority, and the letters to the patients.

Nothing here touches a table or a key: the gateway does (``labvault.access.breach``,
``labvault.access.incidents``).
"""
