"""The run page in chromium: live plots are drawn, grow while the run logs, and the
page reloads into the final state when the run finishes."""

import time

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.db import OperationalError
from django.test import Client

from tests.conftest import PASSWORD
from tests.training.webdata import make_snapshot
from training import services

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HUB_MODEL = "prefline-tests/tiny-llama"


def while_page_polls(write, attempts: int = 20):
    """Run a write beside the live server's polling reads.

    In-memory SQLite shares one cache between the test and the server thread; a
    read in progress there makes a write here fail at once with "table is locked"
    (busy timeouts do not apply), so retry briefly. PostgreSQL never needs it.
    """
    for attempt in range(attempts):
        try:
            return write()
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def logged_in_page(chromium, live_server, user):
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    context = chromium.new_context()
    context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    return context.new_page()


def test_run_page_draws_live_plots_and_reloads_when_the_run_ends(
    chromium, live_server, project, researcher, tmp_path, scorer_config_dir
):
    snapshot = make_snapshot(project, researcher, tmp_path)
    run = services.run_queue(
        snapshot=snapshot,
        recipe="rloo-lora",
        base_model=HUB_MODEL,
        overrides={"reward_model": str(scorer_config_dir)},
        user=researcher,
    )
    services.run_start(
        run=run, kind="rl", config=run.config, output_dir="/o", base_model="m", pid=1
    )
    rng = np.random.default_rng(0)
    for step in range(1, 31):
        services.metric_record(
            run=run,
            step=step,
            values={
                "loss": 0.5 + rng.normal(0, 0.01),
                "kl": 0.01 * step,
                "completions/mean_length": 30 + 4 * step + rng.normal(0, 2),
                "learning_rate": 1e-5,
                "clip_ratio/region_mean": 0.0,
            },
        )
    page = logged_in_page(chromium, live_server, researcher)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    loss = page.locator('svg path[data-metric="loss"]')
    loss.wait_for(timeout=15000)
    titles = page.locator("figure.plot h3").all_inner_texts()
    assert {
        "Loss",
        "KL to the reference",
        "Completion lengths",
        "Learning rate",
    } <= set(titles)
    # the warning's step range is shaded on the lengths plot
    lengths = page.locator('figure[data-panel="Completion lengths"] rect')
    assert lengths.count() == 1
    assert page.locator("#warnings-list article").count() == 1
    for figure in page.locator("figure.plot").all():
        steps = figure.locator("text.plot-xtick").all_text_contents()
        assert len(steps) == len(set(steps)), steps  # no repeated step ticks
    kl_axis = page.locator(
        'figure[data-panel="KL to the reference"] text.plot-axis:not(.plot-xtick)'
    ).all_text_contents()
    assert not [t for t in kl_axis if t.startswith("-")], kl_axis  # KL >= 0
    points_before = loss.get_attribute("d").count("L")

    while_page_polls(
        lambda: services.metric_record(run=run, step=31, values={"loss": 0.4})
    )
    page.wait_for_function(
        "n => document.querySelector('svg path[data-metric=\"loss\"]')"
        ".getAttribute('d').split('L').length - 1 > n",
        arg=points_before,
        timeout=20000,
    )

    while_page_polls(lambda: services.run_finish(run=run, summary={"global_step": 31}))
    page.locator(".run-header .run-status-succeeded").wait_for(timeout=20000)
    assert page.locator("#cancel-run").count() == 0
    # Stop the page polling before the test ends, so no request is in flight
    # while the test database is torn down.
    page.context.close()


def test_run_page_fits_a_desktop_window_with_long_checkpoint_paths(
    chromium, live_server, project, researcher, tmp_path
):
    """Paths have no spaces to wrap at: they must break, not widen the page."""
    snapshot = make_snapshot(project, researcher, tmp_path)
    run = services.run_queue(
        snapshot=snapshot,
        recipe="dpo-lora-sigmoid",
        base_model=HUB_MODEL,
        user=researcher,
    )
    deep = "/".join(["prefline-data", "runs", "dpo-" + "x" * 40, "checkpoints"] * 3)
    services.checkpoint_register(
        run=run,
        path=f"/{deep}/checkpoint-3",
        step=3,
        is_adapter=True,
        base_model=f"/{deep}/base-model",
        eval_metrics={f"eval_rewards/metric_number_{i}": 0.5 for i in range(8)},
    )
    page = logged_in_page(chromium, live_server, researcher)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.locator("#checkpoints-title").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.context.close()
