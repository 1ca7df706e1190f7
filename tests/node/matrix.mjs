// Vercel AI SDK against the gateway: `node matrix.mjs <base url> <model>` prints one JSON object
// with each call's result (or its error). Driven by tests/e2e/test_clients_node.py.
import { generateText, streamText, generateObject } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { z } from "zod";

const [baseURL, modelName] = process.argv.slice(2);
const prompt = process.env.PROMPT ?? "hello";
const schema = z.object({ answer: z.string() });

// The default provider: `openai(model)` uses the Responses API.
const openai = createOpenAI({ baseURL, apiKey: "unused" });
// The generic one: chat completions.
const compatible = createOpenAICompatible({ name: "hybrid-router", baseURL, apiKey: "unused",
                                            supportsStructuredOutputs: true });

async function attempt(fn) {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    return { ok: false, error: String(err?.message ?? err).slice(0, 500) };
  }
}

async function streamed(model) {
  const result = streamText({ model, prompt });
  let text = "";
  for await (const part of result.textStream) text += part;
  const usage = await result.usage;
  return { text, usage };
}

const out = {};
for (const [name, provider] of [["openai", openai], ["compatible", compatible]]) {
  const model = provider(modelName);
  out[`${name}.generateText`] = await attempt(async () => (await generateText({ model, prompt })).text);
  out[`${name}.streamText`] = await attempt(async () => (await streamed(model)).text);
  out[`${name}.generateObject`] = await attempt(async () => (await generateObject({ model, schema, prompt })).object);
}
console.log(JSON.stringify(out));
