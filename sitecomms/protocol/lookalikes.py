"""The "skeleton" of a name: what it reads as, so look-alikes of a reserved name can be refused.

`skeleton(text)` folds away what makes two names look the same to a reader but differ as
strings: compatibility forms (NFKC: fullwidth, mathematical and circled letters), case,
accents and other combining marks, every character that is not a letter or a digit (white
space, punctuation, symbols), and the look-alikes in `_LOOKALIKES`. Two names with the same
skeleton may be confused; `rules.display_name` refuses a name whose skeleton is that of a
reserved word.

`_LOOKALIKES` is a compact, hand-written subset of Unicode's confusables (UTS #39): the Latin
look-alikes from Cyrillic, Greek, IPA and small capitals, and the digits and signs read as
letters (0 as o; 1, l, I, i, | and ! as one stroke). It aims at the letters of the reserved
words, not at every confusable pair in Unicode (that table has thousands of entries and would
be a dependency of every client, which run the same rules). Stdlib only, like all of
`sitecomms.protocol`.
"""

from __future__ import annotations

import unicodedata

# After NFKD and casefold: each character mapped to the Latin letter it reads as.
_LOOKALIKES = str.maketrans(
    {
        # one vertical stroke: i, l, 1 and their look-alikes all read as "l"
        "i": "l",
        "1": "l",
        "ı": "l",  # dotless i
        "ɩ": "l",  # iota (Latin)
        "ɪ": "l",  # small capital I
        "ι": "l",  # Greek iota
        "і": "l",  # Cyrillic i
        "ӏ": "l",  # Cyrillic palochka
        "ǀ": "l",  # dental click
        # round: o and 0
        "0": "o",
        "ο": "o",  # Greek omicron
        "σ": "o",  # Greek sigma
        "о": "o",  # Cyrillic o
        "ᴏ": "o",  # small capital O
        "ⲟ": "o",  # Coptic o
        "օ": "o",  # Armenian o
        # Cyrillic
        "а": "a",
        "в": "b",
        "ь": "b",
        "с": "c",
        "ԁ": "d",
        "е": "e",
        "ё": "e",
        "г": "r",
        "һ": "h",
        "н": "h",
        "ј": "j",
        "к": "k",
        "м": "m",
        "п": "n",
        "р": "p",
        "ԛ": "q",
        "ѕ": "s",
        "т": "t",
        "у": "y",
        "ү": "y",
        "ԝ": "w",
        "х": "x",
        "ц": "u",
        # Greek
        "α": "a",
        "β": "b",
        "ϲ": "c",
        "δ": "d",
        "ε": "e",
        "η": "n",
        "κ": "k",
        "μ": "m",
        "ν": "v",
        "ρ": "p",
        "ς": "s",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "γ": "y",
        "ζ": "z",
        # Latin small capitals and IPA
        "ᴀ": "a",
        "ɑ": "a",
        "ʙ": "b",
        "ᴄ": "c",
        "ᴅ": "d",
        "ɗ": "d",
        "ᴇ": "e",
        "ɡ": "g",
        "ʜ": "h",
        "ᴋ": "k",
        "ʟ": "l",
        "ᴍ": "m",
        "ɴ": "n",
        "ᴘ": "p",
        "ʀ": "r",
        "ꜱ": "s",
        "ʂ": "s",
        "ᴛ": "t",
        "ᴜ": "u",
        "ᴠ": "v",
        "ᴡ": "w",
        "ʏ": "y",
        "ᴢ": "z",
        # Armenian
        "ս": "u",
        "ո": "n",
        "հ": "h",
    }
)


# Signs that read as a stroke between letters ("adm!n", "adm|n") but as punctuation after them.
_STROKES = str.maketrans({"!": "l", "|": "l", "¡": "l", "¦": "l"})


def skeleton(text: str, *, strokes: bool = False) -> str:
    """What `text` reads as: letters and digits only, case, accents and look-alikes folded.

    With `strokes`, the signs that look like a vertical stroke (`!`, `|`) read as the letter
    l; without, as the punctuation they are (dropped). A name may be read either way.
    """
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    unmarked = "".join(c for c in folded if not unicodedata.category(c).startswith("M"))
    mapped = unmarked.translate(_STROKES if strokes else {}).translate(_LOOKALIKES)
    letters = "".join(c for c in mapped if unicodedata.category(c)[0] in "LN")
    return letters.replace("rn", "m").replace("vv", "w")
