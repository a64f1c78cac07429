"""The translation task inside a cell's worker: text-to-text generation scored with sacreBLEU (heavy)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from harness.errors import HarnessError
from harness.tasklib.prompts import TRANSLATION
from harness.tasklib.text2text import GenerationSettings, TextToTextRun
from harness.tasklib.textpairs import PairSplits

from . import data
from .scores import bleu_chrf, reference_streams


class TranslationRun(TextToTextRun):
    """Translation for one cell: corpus BLEU (``bleu``) and chrF (``chrf``) on the 0–100 scale."""

    def __init__(
        self,
        splits: PairSplits,
        options: Mapping[str, Any],
        *,
        family: str,
        max_length: int,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.target_lang = options["target_lang"]
        self.bleu_tokenize = options.get("bleu_tokenize")
        streams = reference_streams([e.references for e in splits.test])
        try:
            bleu = BLEU(tokenize=self.bleu_tokenize, trg_lang=self.target_lang, references=streams)
        except (ImportError, RuntimeError) as exc:  # e.g. ja-mecab without its optional dependency
            raise HarnessError(f"sacreBLEU cannot tokenize for {self.target_lang!r}: {exc}") from None
        chrf = CHRF(references=streams)
        super().__init__(
            splits,
            family=family,
            template=TRANSLATION.choose(family, options.get("prompt")),
            input_field=TRANSLATION.input_field,
            values=data.prompt_values(options),
            max_length=max_length,
            max_target_length=options["max_target_length"],
            generation=GenerationSettings.from_options(options),
            primary_metric=options["primary_metric"],
            metadata={
                "metric_library": f"sacrebleu {sacrebleu.__version__}",
                "bleu_signature": str(bleu.get_signature()),
                "chrf_signature": str(chrf.get_signature()),
            },
            progress=progress,
        )

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        return bleu_chrf(predictions, references, target_lang=self.target_lang, tokenize=self.bleu_tokenize)
