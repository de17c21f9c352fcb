// stylecore's page: pick a photo, a style (gallery or upload), models, alpha; POST /stylize once per model.
"use strict";
const state = { content: null, styleFile: null, styleId: null };
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function ready() {
  const models = document.querySelectorAll("#models input:checked").length;
  $("go").disabled = !(state.content && (state.styleFile || state.styleId) && models);
}

function preview(img, file) {
  img.src = URL.createObjectURL(file);
  img.hidden = false;
}

function setContent(file) {
  if (!file) return;
  state.content = file;
  preview($("content-preview"), file);
  $("drop-text").hidden = true;
  ready();
}

function selectStyle(id, button) {
  state.styleId = id;
  state.styleFile = null;
  $("style-file").value = "";
  $("style-preview").hidden = true;
  document.querySelectorAll("#gallery button").forEach((b) => b.setAttribute("aria-selected", String(b === button)));
  ready();
}

async function loadJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function init() {
  try {
    const [{ models, limits }, { styles }] = await Promise.all([loadJson("/models"), loadJson("/styles")]);
    const sizes = [256, 384, 512, 768, 1024].filter((s) => s < limits.max_output_side).concat([limits.max_output_side]);
    sizes.forEach((side) => {
      const option = document.createElement("option");
      option.value = String(side);
      option.textContent = `${side} px`;
      option.selected = side === Math.max(...sizes.filter((s) => s <= 512));
      $("size").append(option);
    });
    const box = $("models");
    models.forEach((m, i) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = m.name;
      input.checked = i < 3 || m.model === "magenta_lite";
      input.addEventListener("change", ready);
      // a GAN translates the photo to its domain (its first) and reads no style image: say so beside its name
      const domains = m.domains || [];
      label.append(input, ` ${m.name}${domains.length ? " → " + domains[0] : ""}`);
      label.title = `${m.model}${m.version ? " version " + m.version : ""} on ${m.device}` +
        (domains.length ? `; translates the photo to ${domains.join(", ")} without reading the style` : "");
      box.append(label);
    });
    const gallery = $("gallery");
    styles.forEach((s) => {
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("role", "option");
      button.setAttribute("aria-selected", "false");
      button.dataset.styleId = s.id;
      button.title = [s.style, s.artist].filter(Boolean).join(" · ");
      const img = document.createElement("img");
      img.src = s.url;
      img.alt = button.title || s.id;
      button.append(img);
      button.addEventListener("click", () => selectStyle(s.id, button));
      gallery.append(button);
    });
  } catch (error) {
    showError(`Could not reach the service: ${error.message}`);
  }
}

async function stylizeWith(model, card) {
  const form = new FormData();
  form.append("content", state.content);
  if (state.styleFile) form.append("style", state.styleFile);
  else form.append("style_id", state.styleId);
  form.append("model", model);
  form.append("alpha", $("alpha").value);
  form.append("preserve_color", $("preserve").value);
  form.append("size", $("size").value);
  const started = performance.now();
  const response = await fetch("/stylize", { method: "POST", body: form });
  const caption = card.querySelector("figcaption");
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    caption.innerHTML = "";
    const strong = document.createElement("strong");
    strong.textContent = model;
    const failed = document.createElement("span");
    failed.className = "failed";
    failed.textContent = ` failed: ${message}`;
    caption.append(strong, failed);
    throw new Error(`${model}: ${message}`);
  }
  const blob = await response.blob();
  const img = card.querySelector("img");
  img.src = URL.createObjectURL(blob);
  img.alt = `the photo stylized by ${model}`;
  img.hidden = false;
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  caption.textContent = `${model} · ${seconds} s (server ${response.headers.get("X-Latency-Ms")} ms, batch ${response.headers.get("X-Batch-Size")})`;
}

async function go() {
  showError("");
  const results = $("results");
  results.innerHTML = "";
  const models = [...document.querySelectorAll("#models input:checked")].map((i) => i.value);
  $("go").disabled = true;
  const runs = models.map((model) => {
    const card = document.createElement("figure");
    card.className = "result";
    card.dataset.model = model;
    const img = document.createElement("img");
    img.hidden = true;
    const caption = document.createElement("figcaption");
    caption.textContent = `${model}: working…`;
    card.append(img, caption);
    results.append(card);
    return stylizeWith(model, card);
  });
  const outcomes = await Promise.allSettled(runs);
  const failures = outcomes.filter((o) => o.status === "rejected").map((o) => o.reason.message);
  if (failures.length) showError(failures.join("\n"));
  ready();
}

$("content-file").addEventListener("change", (e) => setContent(e.target.files[0]));
$("style-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  state.styleFile = file;
  state.styleId = null;
  document.querySelectorAll("#gallery button").forEach((b) => b.setAttribute("aria-selected", "false"));
  preview($("style-preview"), file);
  ready();
});
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => setContent(e.dataTransfer.files[0]));
$("alpha").addEventListener("input", (e) => { $("alpha-value").textContent = Number(e.target.value).toFixed(2); });
$("go").addEventListener("click", go);
init();
