// The official openai Node client against a tiergate gateway, as a Node product would call it.
// Run by tests/serve/test_node_client_e2e.py, which installs the package and passes, in the JSON
// file named by argv[2], the base URL and the request bodies. Prints one JSON object of what came
// back; the Python test judges it. Any client error exits non-zero with the error on stderr.
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const client = new OpenAI({ baseURL: spec.base_url, apiKey: "unused", maxRetries: 0, timeout: 300_000 });
const out = { client_version: spec.client_version };

// non-streamed, with the response headers (withResponse: the raw Response beside the parsed body)
async function call(body) {
  const { data, response } = await client.chat.completions.create(body).withResponse();
  const choice = data.choices[0];
  return {
    model: data.model, finish_reason: choice.finish_reason, content: choice.message.content,
    tool_calls: choice.message.tool_calls ?? [], message: choice.message,
    headers: { model: response.headers.get("x-tiergate-model"),
               quality_class: response.headers.get("x-tiergate-quality-class") },
  };
}

// streamed, read chunk by chunk as most products do
async function streamed(body) {
  const stream = await client.chat.completions.create({ ...body, stream: true });
  let content = "", finish = null, chunks = 0, model = null;
  for await (const chunk of stream) {
    chunks += 1;
    model = chunk.model;
    const choice = chunk.choices[0];
    if (!choice) continue;
    content += choice.delta?.content ?? "";
    finish = choice.finish_reason ?? finish;
  }
  return { model, content, finish_reason: finish, chunks };
}

// streamed through the SDK's own accumulator, which assembles delta.tool_calls into a message
// (client.chat.completions.stream since openai v5; client.beta.chat.completions.stream in v4)
async function accumulated(body) {
  const completions = client.chat.completions.stream ? client.chat.completions : client.beta.chat.completions;
  const runner = completions.stream(body);
  const final = await runner.finalChatCompletion();
  const choice = final.choices[0];
  return { model: final.model, finish_reason: choice.finish_reason, content: choice.message.content,
           tool_calls: choice.message.tool_calls ?? [], message: choice.message };
}

function toolResult(call) {
  return { role: "tool", tool_call_id: call.id, content: JSON.stringify(spec.tool_result) };
}

try {
  out.schema = await call(spec.schema);
  out.schema_stream = await streamed(spec.schema_stream);
  out.tool = await call(spec.tool);
  out.tool_stream = await accumulated(spec.tool_stream);
  // follow-ups: the assistant message as the client returned it, then the tool's result
  const afterCall = [...spec.tool.messages, out.tool.message, ...out.tool.tool_calls.map(toolResult)];
  out.follow_streamed = await streamed({ ...spec.follow_up, messages: afterCall });
  const afterStream = [...spec.tool_stream.messages, out.tool_stream.message,
                       ...out.tool_stream.tool_calls.map(toolResult)];
  out.follow = await call({ ...spec.follow_up, messages: afterStream });
} catch (err) {
  console.error(`openai ${spec.client_version}: ${err?.constructor?.name}: ${err?.message}`);
  console.error(JSON.stringify(err?.error ?? null));
  process.exit(1);
}
process.stdout.write(JSON.stringify(out));
