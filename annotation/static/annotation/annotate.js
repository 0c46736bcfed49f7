// Task page: submit judgments and skips with fetch, swap in the next task's HTML
// fragment (no page reload), and drive everything from the keyboard.
//   1 left · 2 right · 3 tie · 4 both bad · s skip · g guidelines · ? help
(function () {
  "use strict";
  const task = document.getElementById("task");
  const alertBox = document.getElementById("alert");
  const announce = document.getElementById("announce");
  const help = document.getElementById("help");
  const guidelines = document.getElementById("guidelines");
  const guidelinesToggle = document.getElementById("guidelines-toggle");
  if (!task) return;
  let busy = false;
  // A held key repeats, and a key pressed as a task arrives was meant for the
  // last one: neither may answer a task the annotator has not seen. Choice keys
  // work once a task has been on screen SETTLE_MS (then #task gets data-ready).
  const SETTLE_MS = 250;
  let shownAt = performance.now();
  let settleTimer = null;
  function settle() {
    shownAt = performance.now();
    delete task.dataset.ready;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => { task.dataset.ready = "1"; }, SETTLE_MS);
  }
  settle();
  // The buttons need this script, so the page shows them only once it runs
  // (without it, a <noscript> style shows the guidelines open instead).
  document.querySelector(".annotate-tools").hidden = false;

  function showAlert(message) {
    alertBox.textContent = message;
    alertBox.hidden = !message;
  }

  function localTimes() {
    // Show the lease end in the annotator's own time zone.
    task.querySelectorAll("time[datetime]").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      }
    });
  }

  function swapIn(html) {
    task.innerHTML = html;
    settle();
    localTimes();
    const heading = document.getElementById("task-heading");
    if (heading) heading.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    const notice = task.querySelector("[data-notice]");
    announce.textContent = (notice ? notice.textContent + " " : "") +
      (heading ? heading.textContent : "");
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" },
    });
    return { status: response.status, html: await response.text() };
  }

  function textOf(html) {
    const box = document.createElement("div");
    box.innerHTML = html;
    return box.textContent.trim();
  }

  function csrfForm() {
    const data = new FormData();
    const token = task.querySelector("input[name=csrfmiddlewaretoken]");
    if (token) data.append("csrfmiddlewaretoken", token.value);
    return data;
  }

  async function loadNext() {
    const result = await post(task.dataset.nextUrl, csrfForm());
    if (result.status === 200) swapIn(result.html);
    else showAlert(textOf(result.html) || "Could not load the next task.");
  }

  async function submit(form, submitter) {
    if (busy) return;
    busy = true;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    const data = new FormData(form);
    if (submitter && submitter.name) data.append(submitter.name, submitter.value);
    const url = (submitter && submitter.getAttribute("formaction")) || form.action;
    try {
      const result = await post(url, data);
      if (result.status === 200) {
        showAlert("");
        swapIn(result.html);
      } else if (result.status === 409 || result.status === 404) {
        // The task is gone (judged, skipped, expired, not yours): say why, move on.
        showAlert(textOf(result.html));
        await loadNext();
      } else {
        showAlert(textOf(result.html) || "The server answered " + result.status + ".");
        buttons.forEach((b) => { b.disabled = false; });
      }
    } catch (error) {
      showAlert("Network error: your answer was not saved. Try again.");
      buttons.forEach((b) => { b.disabled = false; });
    } finally {
      busy = false;
    }
  }

  localTimes();

  task.addEventListener("submit", function (event) {
    event.preventDefault();
    submit(event.target, event.submitter);
  });

  function toggleGuidelines() {
    guidelines.hidden = !guidelines.hidden;
    guidelinesToggle.setAttribute("aria-expanded", String(!guidelines.hidden));
  }
  guidelinesToggle.addEventListener("click", toggleGuidelines);
  document.getElementById("help-open").addEventListener("click", () => help.showModal());

  function typing(target) {
    return target.closest("input[type=text], textarea, select, [contenteditable]");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (help.open) return; // the dialog handles Esc itself
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.key === "?") {
      event.preventDefault();
      help.showModal();
      return;
    }
    if (event.key === "g" || event.key === "G") {
      event.preventDefault();
      toggleGuidelines();
      return;
    }
    const key = event.key.toLowerCase();
    const button = task.querySelector('button[data-key="' + key + '"]');
    if (button && !button.disabled) {
      event.preventDefault();
      if (event.repeat || performance.now() - shownAt < SETTLE_MS) return;
      button.click();
    }
  });
})();
