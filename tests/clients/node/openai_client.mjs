// The OpenAI Node SDK against one base URL: chat (json, stream), Responses (create, retrieve,
// stream). Prints one JSON line per result, without per-request ids and clocks, so the suite
// can compare a run straight at vLLM with a run through nometer.
//   node openai_client.mjs BASE_URL MODEL
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
const VOLATILE = new Set(["id", "created", "created_at", "completed_at", "item_id", "call_id"]);
const scrub = (v) =>
  Array.isArray(v)
    ? v.map(scrub)
    : v && typeof v === "object"
      ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, VOLATILE.has(k) ? "X" : scrub(x)]))
      : v;
const out = (name, value) => console.log(JSON.stringify({ name, value: scrub(value) }));

const messages = [{ role: "user", content: "Tell me about lighthouses." }];
const chat = { model, messages, max_tokens: 6, temperature: 0 };
await client.chat.completions.create(chat); // warm the prefix cache: both runs see the same cached tokens
out("chat", await client.chat.completions.create(chat));
const chunks = [];
for await (const c of await client.chat.completions.create({ ...chat, stream: true })) chunks.push(c);
out("chat.stream", chunks);
const withUsage = [];
const s = await client.chat.completions.create({ ...chat, stream: true, stream_options: { include_usage: true } });
for await (const c of s) withUsage.push(c);
out("chat.stream.usage", withUsage);
const input = { model, input: "Hello there", max_output_tokens: 5, temperature: 0 };
const created = await client.responses.create(input);
out("responses", created);
out("responses.retrieve", await client.responses.retrieve(created.id));
const events = [];
for await (const e of await client.responses.create({ ...input, stream: true })) events.push(e);
out("responses.stream", events);
