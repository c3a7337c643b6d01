"""Helpers shared by the reward tests of several kinds."""


from training.utils.data import PairCollator


def _batch(tok):
    rows = [{"chosen_ids": tok("hello there")["input_ids"] + [tok.eos_token_id],
             "rejected_ids": tok("go away now please")["input_ids"] + [tok.eos_token_id], "prompt_len": 1},
            {"chosen_ids": tok("four")["input_ids"] + [tok.eos_token_id],
             "rejected_ids": tok("five")["input_ids"] + [tok.eos_token_id], "prompt_len": 1}]
    return PairCollator(tok.pad_token_id)(rows)
