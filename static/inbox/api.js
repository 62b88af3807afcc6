// The inbox talks to Parley only through the REST API (the same services as any integration).
// Every call names this page's socket, so the events it causes are not echoed back to it.
export const socket = {id: ""};

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.fields = (body && body.fields) || {};
  }
}

export async function api(path, {method = "GET", json, form} = {}) {
  const headers = {"Accept": "application/json", "X-Parley-Socket": socket.id};
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  const url = path.startsWith("http") || path.startsWith("/") ? path : `/api/v1/${path}`;
  const response = await fetch(url, {method, headers, body, credentials: "same-origin"});
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
