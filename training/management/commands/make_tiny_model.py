"""`manage.py make_tiny_model OUT_DIR`: build the tiny demo/test model offline."""

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Build a tiny Llama causal LM (random weights, hidden 128, 2 layers, head_dim "
        "64) with a byte-level BPE tokenizer trained on local text and a chat "
        "template, saved with save_pretrained into OUT_DIR. Needs no network."
    )

    def add_arguments(self, parser):
        parser.add_argument("out_dir", help="Directory to write the model into.")
        parser.add_argument("--seed", type=int, default=0, help="Weight init seed.")

    def handle(self, *args, **options):
        from training.tiny_model import build_tiny_model

        path = build_tiny_model(options["out_dir"], seed=options["seed"])
        self.stdout.write(f"Tiny model written to {path}")
