"""The scripted chat engine of the tool tests: the tiny model's tokenizer and template, answers from a script."""
from applications.chat_engine import ChatEngine, Completion

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


class Scripted(ChatEngine):
    """The tiny model's tokenizer and template; answers from a script: a call, or after a tool result the
    sentence that uses it. A prompt that already opens the call (tool_choice) gets the call's remainder."""

    def __init__(self, call: str = CALL):
        super().__init__("tiny")
        self.call, self.prompts = call, []

    def generate(self, requests, sampling):
        out = []
        for r in requests:
            text = self.tok.decode(r.prompt_ids)
            self.prompts.append(text)
            if "<|im_start|>tool\n" in text:
                answer = "It is sunny in Paris."
            else:
                opening = text[text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n"):]
                answer = self.call[len(opening):] if self.call.startswith(opening) else self.call
            out.append(Completion(answer, "stop", len(self.tok(answer)["input_ids"]), len(r.prompt_ids)))
        return out
