"""Submissions that tests/test_grading.py grades for the assignment 02_transformer.

The mistakes are the classic ones of chapter 2: the sinusoidal encoding with sine and cosine
swapped or the wrong exponent, pre-LN and post-LN swapped, a mask that works only as a (B, 1, 1, T)
padding mask (in the encoder's self-attention or the decoder's cross-attention), the causal mask
left off or put on the cross-attention, queries and keys swapped in the cross-attention, the
target not shifted, the BOS column made on the default device instead of the target's, the
embedding scale forgotten, the position table left in float32 under float16 or bfloat16
embeddings.
"""

from grading_cases import exercises, function, indent

NOTEBOOK = "exercises"

EXERCISES = exercises("pe", "encoder", "decoder", "shift", "teacher_forcing")

PE = EXERCISES["pe"][1]
ENCODER = EXERCISES["encoder"][1]
DECODER = EXERCISES["decoder"][1]
SHIFT = EXERCISES["shift"][1]
TEACHER = EXERCISES["teacher_forcing"][1]

ENCODER_CLASS = '''
class EncoderLayer(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, *, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = tfcourse.MultiHeadAttention(d_model, num_heads)
        self.feed_forward = tfcourse.FeedForward(d_model, d_ff)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x, mask=None):
{body}
'''

DECODER_CLASS = '''
class DecoderLayer(nn.Module):
    def __init__(self, d_model, num_heads, d_ff):
        super().__init__()
        self.self_attn = tfcourse.MultiHeadAttention(d_model, num_heads)
        self.cross_attn = tfcourse.MultiHeadAttention(d_model, num_heads)
        self.feed_forward = tfcourse.FeedForward(d_model, d_ff)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x, memory, memory_mask=None):
{body}
'''

TEACHER_FUNCTION = '''
def teacher_forcing_loss(tgt, memory, *, embedding, decoder, head, bos_id, pad_id):
{body}
'''


def encoder(body: str) -> str:
    """The exercise-2 class with ``body`` (unindented lines) as its forward."""
    return ENCODER_CLASS.format(body=indent(body, 8))


def decoder(body: str) -> str:
    """The exercise-3 class with ``body`` (unindented lines) as its forward."""
    return DECODER_CLASS.format(body=indent(body, 8))


def teacher(body: str) -> str:
    """The exercise-5 function with ``body`` (unindented lines)."""
    return TEACHER_FUNCTION.format(body=indent(body, 4))


def pe(angle_and_table: str) -> str:
    """An exercise-1 function whose body (unindented lines) ends by returning the table."""
    return function("sinusoidal_encoding(num_positions, d_model, *, base=10000.0, "
                    "dtype=torch.float32)", angle_and_table)


# The right decoder layer with one sublayer call changed (each mistake below edits one line).
DECODER_RIGHT = '''
x = self.norm1(x + self.self_attn(x, is_causal=True))
x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
return self.norm3(x + self.feed_forward(x))
'''

# The right loss with one step changed (each mistake below edits one line).
TEACHER_RIGHT = '''
B, T = tgt.shape
C = embedding.embedding_dim
tgt_in = shift_right(tgt, bos_id)
pe = tfcourse.sinusoidal_encoding(T, C, dtype=embedding.weight.dtype)
x = embedding(tgt_in) * math.sqrt(C) + pe
logits = head(decoder(x, memory))
return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T), ignore_index=pad_id)
'''


def teacher_with(old: str, new: str) -> str:
    assert old in TEACHER_RIGHT, old
    return teacher(TEACHER_RIGHT.replace(old, new))


def decoder_with(old: str, new: str) -> str:
    assert old in DECODER_RIGHT, old
    return decoder(DECODER_RIGHT.replace(old, new))


# Correct code written differently from the solution: every exercise at once.
ALTERNATIVE = {
    "pe": pe('''
# frequencies as exp(-2i log(base) / C), in the dtype asked for; sin and cos stacked, then
# flattened, which interleaves them: (T, C/2, 2) -> (T, C)
freq = torch.exp(-math.log(base) * torch.arange(0, d_model, 2, dtype=dtype) / d_model)
angles = torch.outer(torch.arange(num_positions, dtype=dtype), freq)
return torch.stack((angles.sin(), angles.cos()), dim=2).flatten(1)
'''),
    "encoder": encoder('''
blocks = [(self.norm1, lambda h: self.self_attn(h, h, h, mask)),
          (self.norm2, self.feed_forward)]
for norm, block in blocks:
    x = x + block(norm(x)) if self.norm_first else norm(x + block(x))
return x
'''),
    "decoder": decoder('''
T = x.shape[1]
future_hidden = tfcourse.causal_mask(T, device=x.device)
x = self.norm1(x + self.self_attn(x, x, x, future_hidden))
x = self.norm2(x + self.cross_attn(query=x, key=memory, value=memory, mask=memory_mask))
ff = self.feed_forward(x)
return self.norm3(ff + x)
'''),
    "shift": '''
def shift_right(tgt, bos_id):
    shifted = torch.roll(tgt, shifts=1, dims=1)  # a new tensor: the last token wraps round...
    shifted[:, 0] = bos_id  # ...and is overwritten by BOS
    return shifted
''',
    "teacher_forcing": teacher('''
T = tgt.shape[1]
d_model = embedding.weight.shape[1]
inputs = shift_right(tgt, bos_id)
x = F.embedding(inputs, embedding.weight) * d_model ** 0.5
x = x + sinusoidal_encoding(T, d_model, dtype=x.dtype)  # mine, from exercise 1
log_probs = torch.log_softmax(head(decoder(x, memory)), dim=-1)  # (B, T, V)
picked = log_probs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T)
real = (tgt != pad_id).to(picked.dtype)
return -(picked * real).sum() / real.sum()
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    # ---- exercise 1, the sinusoidal encoding
    "pe_sin_cos_swapped": {
        "replace": {"pe": pe('''
angle = torch.arange(num_positions)[:, None] / base ** (torch.arange(0, d_model, 2) / d_model)
table = torch.zeros(num_positions, d_model)
table[:, 0::2] = torch.cos(angle)
table[:, 1::2] = torch.sin(angle)
return table.to(dtype)
''')},
        "loses": "pe", "fails": PE,
    },
    "pe_exponent_from_the_channel_index": {  # cos channels 2i+1 get base^((2i+1)/C)
        "replace": {"pe": pe('''
j = torch.arange(d_model)
angle = torch.arange(num_positions)[:, None] / base ** (j / d_model)  # (T, C)
return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).to(dtype)
''')},
        "loses": "pe", "fails": PE,
    },
    "pe_exponent_without_the_factor_2": {  # base^(i/C) with i the pair index
        "replace": {"pe": pe('''
i = torch.arange(d_model // 2)
angle = torch.arange(num_positions)[:, None] / base ** (i / d_model)
table = torch.zeros(num_positions, d_model)
table[:, 0::2] = torch.sin(angle)
table[:, 1::2] = torch.cos(angle)
return table.to(dtype)
''')},
        "loses": "pe", "fails": PE,
    },
    "pe_sines_then_cosines": {  # all sines first, then all cosines (concatenated, not interleaved)
        "replace": {"pe": pe('''
angle = torch.arange(num_positions)[:, None] / base ** (torch.arange(0, d_model, 2) / d_model)
return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(dtype)
''')},
        "loses": "pe", "fails": PE,
    },
    "pe_ignores_base": {  # right for the paper's 10000 (the self-check), wrong for other bases
        "replace": {"pe": pe('''
angle = torch.arange(num_positions)[:, None] / 10000 ** (torch.arange(0, d_model, 2) / d_model)
return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(1).to(dtype)
''')},
        "loses": "pe", "fails": ("pe_hidden",),
    },
    "pe_calls_tfcourse": {
        "replace": {"pe": '''
def sinusoidal_encoding(num_positions, d_model, *, base=10000.0, dtype=torch.float32):
    return tfcourse.sinusoidal_encoding(num_positions, d_model, base=base, dtype=dtype)
'''},
        "loses": "pe", "fails": PE,
    },
    # ---- exercise 2, the encoder layer
    "encoder_pre_and_post_ln_swapped": {
        "replace": {"encoder": encoder('''
if not self.norm_first:
    x = x + self.self_attn(self.norm1(x), mask=mask)
    return x + self.feed_forward(self.norm2(x))
x = self.norm1(x + self.self_attn(x, mask=mask))
return self.norm2(x + self.feed_forward(x))
''')},
        "loses": "encoder", "fails": ENCODER,
    },
    "encoder_pre_ln_normalises_the_residual": {  # h = norm(x); x = h + sublayer(h)
        "replace": {"encoder": encoder('''
if self.norm_first:
    x = self.norm1(x)
    x = x + self.self_attn(x, mask=mask)
    x = self.norm2(x)
    return x + self.feed_forward(x)
x = self.norm1(x + self.self_attn(x, mask=mask))
return self.norm2(x + self.feed_forward(x))
''')},
        "loses": "encoder", "fails": ENCODER,
    },
    "encoder_ignores_the_mask": {
        "replace": {"encoder": encoder('''
if self.norm_first:
    x = x + self.self_attn(self.norm1(x))
    return x + self.feed_forward(self.norm2(x))
x = self.norm1(x + self.self_attn(x))
return self.norm2(x + self.feed_forward(x))
''')},
        "loses": "encoder", "fails": ENCODER,
    },
    "encoder_mask_expanded_per_head": {  # right for (B, 1, 1, T) masks, an error for (T, T)
        "replace": {"encoder": encoder('''
if mask is not None:
    mask = mask.expand(-1, self.self_attn.num_heads, -1, -1)  # (B, H, 1, T)
if self.norm_first:
    x = x + self.self_attn(self.norm1(x), mask=mask)
    return x + self.feed_forward(self.norm2(x))
x = self.norm1(x + self.self_attn(x, mask=mask))
return self.norm2(x + self.feed_forward(x))
''')},
        "loses": "encoder", "fails": ("encoder_hidden",),
    },
    "encoder_wraps_nn_transformer_encoder_layer": {
        "replace": {"encoder": encoder('''
C = self.norm1.normalized_shape[0]
ref = nn.TransformerEncoderLayer(C, self.self_attn.num_heads,
                                 self.feed_forward.linear1.out_features, dropout=0.0,
                                 batch_first=True, norm_first=self.norm_first).to(x.dtype)
with torch.no_grad():
    attn = self.self_attn
    ref.self_attn.in_proj_weight.copy_(
        torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
    ref.self_attn.in_proj_bias.copy_(
        torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
    ref.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
    ref.linear1.load_state_dict(self.feed_forward.linear1.state_dict())
    ref.linear2.load_state_dict(self.feed_forward.linear2.state_dict())
    ref.norm1.load_state_dict(self.norm1.state_dict())
    ref.norm2.load_state_dict(self.norm2.state_dict())
blocked = None if mask is None else ~mask[:, 0, 0]
return ref(x, src_key_padding_mask=blocked)
''')},
        "loses": "encoder", "fails": ENCODER,
    },
    # ---- exercise 3, the decoder layer
    "decoder_without_causal_mask": {
        "replace": {"decoder": decoder_with("self.self_attn(x, is_causal=True)",
                                            "self.self_attn(x)")},
        "loses": "decoder", "fails": DECODER,
    },
    "decoder_causal_mask_on_cross_attention_too": {
        "replace": {"decoder": decoder_with(
            "self.cross_attn(x, memory, memory, mask=memory_mask)",
            "self.cross_attn(x, memory, memory, mask=memory_mask, is_causal=True)")},
        "loses": "decoder", "fails": DECODER,
    },
    "decoder_causal_mask_on_cross_attention_only": {
        "replace": {"decoder": decoder(
            DECODER_RIGHT.replace("self.self_attn(x, is_causal=True)", "self.self_attn(x)")
            .replace("mask=memory_mask)", "mask=memory_mask, is_causal=True)"))},
        "loses": "decoder", "fails": DECODER,
    },
    "decoder_queries_from_memory": {  # queries and keys swapped in the cross-attention
        "replace": {"decoder": decoder_with(
            "self.cross_attn(x, memory, memory, mask=memory_mask)",
            "self.cross_attn(memory, x, x)")},
        "loses": "decoder", "fails": DECODER,
    },
    "decoder_ignores_the_memory_mask": {
        "replace": {"decoder": decoder_with(
            "self.cross_attn(x, memory, memory, mask=memory_mask)",
            "self.cross_attn(x, memory, memory)")},
        "loses": "decoder", "fails": DECODER,
    },
    "decoder_memory_mask_expanded_per_head": {  # right for (B, 1, 1, S), an error for (T, S)
        "replace": {"decoder": decoder('''
x = self.norm1(x + self.self_attn(x, is_causal=True))
if memory_mask is not None:
    memory_mask = memory_mask.expand(-1, self.cross_attn.num_heads, -1, -1)  # (B, H, 1, S)
x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
return self.norm3(x + self.feed_forward(x))
''')},
        "loses": "decoder", "fails": ("decoder_hidden",),
    },
    "decoder_cross_attention_is_self_attention": {  # keys and values from x: memory unused
        "replace": {"decoder": decoder_with(
            "self.cross_attn(x, memory, memory, mask=memory_mask)", "self.cross_attn(x)")},
        "loses": "decoder", "fails": DECODER,
    },
    # ---- exercise 4, shift_right (exercise 5 builds on it, so it fails too)
    "shift_drops_the_first_token": {
        "replace": {"shift": '''
def shift_right(tgt, bos_id):
    bos = torch.full((tgt.shape[0], 1), bos_id, dtype=tgt.dtype)
    return torch.cat([bos, tgt[:, 1:]], dim=1)
'''},
        "loses": "shift", "fails": SHIFT + TEACHER,
    },
    "shift_with_roll_only": {  # the last token wraps round to the front instead of BOS
        "replace": {"shift": '''
def shift_right(tgt, bos_id):
    return torch.roll(tgt, 1, dims=1)
'''},
        "loses": "shift", "fails": SHIFT + TEACHER,
    },
    "shift_in_place": {  # right values, but the caller's target is overwritten
        "replace": {"shift": '''
def shift_right(tgt, bos_id):
    tgt[:, 1:] = tgt[:, :-1].clone()
    tgt[:, 0] = bos_id
    return tgt
'''},
        "loses": "shift", "fails": SHIFT + TEACHER,
    },
    "shift_calls_tfcourse": {
        "replace": {"shift": '''
def shift_right(tgt, bos_id):
    return tfcourse.shift_right(tgt, bos_id)
'''},
        "loses": "shift", "fails": SHIFT + TEACHER,
    },
    "shift_bos_on_the_default_device": {  # right on the CPU; on a GPU torch.cat fails
        "replace": {"shift": '''
def shift_right(tgt, bos_id):
    bos = torch.full((tgt.shape[0], 1), bos_id, dtype=tgt.dtype)
    return torch.cat([bos, tgt[:, :-1]], dim=1)
'''},
        "loses": "shift", "fails": ("shift_hidden",),
    },
    # ---- exercise 5, the teacher-forcing loss
    "teacher_forcing_target_not_shifted": {
        "replace": {"teacher_forcing": teacher_with("tgt_in = shift_right(tgt, bos_id)",
                                                    "tgt_in = tgt")},
        "loses": "teacher_forcing", "fails": TEACHER,
    },
    "teacher_forcing_embedding_scale_forgotten": {
        "replace": {"teacher_forcing": teacher_with("embedding(tgt_in) * math.sqrt(C)",
                                                    "embedding(tgt_in)")},
        "loses": "teacher_forcing", "fails": TEACHER,
    },
    "teacher_forcing_padding_in_the_loss": {
        "replace": {"teacher_forcing": teacher_with(", ignore_index=pad_id)", ")")},
        "loses": "teacher_forcing", "fails": TEACHER,
    },
    "teacher_forcing_labels_are_the_shifted_input": {
        "replace": {"teacher_forcing": teacher_with("tgt.reshape(B * T)",
                                                    "tgt_in.reshape(B * T)")},
        "loses": "teacher_forcing", "fails": TEACHER,
    },
    "teacher_forcing_fixed_token_ids": {  # right for BOS = 1, PAD = 0 (the self-check) only
        "replace": {"teacher_forcing": teacher(
            TEACHER_RIGHT.replace("shift_right(tgt, bos_id)", "shift_right(tgt, 1)")
            .replace("ignore_index=pad_id", "ignore_index=0"))},
        "loses": "teacher_forcing", "fails": ("teacher_forcing_hidden",),
    },
    "teacher_forcing_uses_token_embedding": {
        "replace": {"teacher_forcing": teacher_with(
            "x = embedding(tgt_in) * math.sqrt(C) + pe",
            "table = tfcourse.TokenEmbedding(embedding.num_embeddings, C).to(pe.dtype)\n"
            "table.weight.data.copy_(embedding.weight.data)\n"
            "x = table(tgt_in) + pe")},
        "loses": "teacher_forcing", "fails": TEACHER,
    },
    "teacher_forcing_positions_in_float32": {  # float64 promotes; float16, bfloat16 do not
        "replace": {"teacher_forcing": teacher_with(
            "tfcourse.sinusoidal_encoding(T, C, dtype=embedding.weight.dtype)",
            "tfcourse.sinusoidal_encoding(T, C)")},
        "loses": "teacher_forcing", "fails": ("teacher_forcing_hidden",),
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"pe": '''
while True:
    pass
'''},
        "loses": "pe", "fails": PE, "times_out": True,
    },
    "kernel_exits": {"replace": {"encoder": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
