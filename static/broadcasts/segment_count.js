// The segment form's live count (templates/admin/broadcasts/segment/change_form.html).
// The number of matching contacts follows the conditions as they are typed: the text is posted,
// debounced, to the admin's count/ URL; only the newest answer is shown.
const config = JSON.parse(document.getElementById("segment-live-count").textContent);
const area = document.getElementById("id_definition");
const output = document.getElementById("segment-count");
const errorList = document.getElementById("segment-count-errors");
const workspace = document.getElementById("id_workspace");
const csrf = document.querySelector("form [name=csrfmiddlewaretoken]");
if (area && output && errorList && csrf) start();

function start() {
  let timer = null;
  let asked = 0;

  function show(text, errors) {
    output.textContent = text;
    output.classList.toggle("segment-count-stale", Boolean(errors.length));
    errorList.replaceChildren(...errors.map((message) => {
      const item = document.createElement("li");
      item.textContent = message;
      return item;
    }));
  }

  async function refresh() {
    const ticket = ++asked;
    const body = {definition: area.value};
    if (config.object_id) body.object_id = config.object_id;
    else if (workspace) body.workspace = workspace.value;
    output.classList.add("segment-count-stale");
    output.textContent = config.counting;
    try {
      const response = await fetch(config.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf.value},
        body: JSON.stringify(body),
      });
      const data = await response.json().catch(() => ({errors: [config.failed + " (" + response.status + ")"]}));
      if (ticket !== asked) return;
      if (response.ok) show(data.text, []);
      else show("", data.errors || [config.failed]);
    } catch (error) {
      if (ticket === asked) show("", [config.failed]);
    }
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  }

  area.addEventListener("input", later);
  if (workspace) workspace.addEventListener("change", later);
  refresh();
}
