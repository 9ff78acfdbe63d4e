// Posts the form to the JSON API and reloads the list; shows validation errors from the API.
document.getElementById("new-note").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const error = document.getElementById("form-error");
  const response = await fetch("/api/notes", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ title: form.title.value, body: form.body.value }),
  });
  if (response.ok) {
    window.location.reload();
    return;
  }
  const data = await response.json().catch(() => ({}));
  error.textContent = data.fields
    ? Object.entries(data.fields).map(([field, message]) => `${field}: ${message}`).join("; ")
    : data.message || `Error ${response.status}`;
});
