//! Multi-task sequence taggers built on the sclstm tape: input representation (word
//! embedding ⊕ capitalization one-hot ⊕ optional char-CNN), the four encoder families of
//! the paper (STL, LSTM-s, LSTM-d, SC-LSTM), softmax and CRF heads, one-call multi-task
//! prediction, safetensors checkpoints and an inspection dump.
//!
//! The model is generic over the element type through the backend (`B: Backend`,
//! `R = B::Elem`): `CpuBackend<f64>` for gradient checks, `f32` for training.
//!
//! ```
//! use std::sync::Arc;
//! use sclstm_cpu::CpuBackend;
//! use sclstm_model::{Family, ModelConfig, ModelInput, TaskConfig, Tagger};
//!
//! let mut cfg = ModelConfig::new(
//!     Family::ScLstm,
//!     vec![TaskConfig::new("pos", &["N", "V"]), TaskConfig::new("chunk", &["B-NP", "O"])],
//!     10,
//! );
//! (cfg.word_dim, cfg.hidden, cfg.layers) = (4, 3, 2);
//! let tagger = Tagger::new(cfg, Arc::new(CpuBackend::<f32>::new(1).unwrap()), 7, None).unwrap();
//! // Two sentences (lengths 2 and 1), time-major: position t·B + b.
//! let input = ModelInput {
//!     steps: 2, batch: 2, lens: &[2, 1],
//!     word_ids: &[3, 4, 5, 0], cap_ids: &[1, 0, 0, 0],
//!     char_ids: &[], char_lens: &[], word_len_max: 0, contextual: &[],
//! };
//! let mut tape = tagger.tape();
//! let loss = tagger.loss(&mut tape, &input, 0, &[1, 0, 0, 0], 42).unwrap();
//! let grads = tape.backward(loss).unwrap();
//! assert!(grads.param(tagger.params().id("head.chunk.weight").unwrap()).is_none());
//! let tags = tagger.predict(&input, &[0, 1]).unwrap(); // both tasks, one pass
//! assert_eq!(tags[1][0].len(), 2);
//! assert_eq!(tags[1][1].len(), 1);
//! ```
//!
//! # Input representation
//! For position `p = t·B + b` of a [`ModelInput`]: `x_p = [e_word ⊕ caps ⊕ char]`, width
//! [`ModelConfig::input_dim`]:
//! - `e_word`: row `word_ids[p]` of `embed.word` (fine-tuned; sparse row gradients);
//! - `caps` (if `caps`): the capitalization class `cap_ids[p] ∈ 0..8` as a **fixed**
//!   one-hot 8-vector (no parameters; zero on padding), or, with `caps_dim = d`, row
//!   `cap_ids[p]` of a learned `embed.caps` table (8, d);
//! - `char` (if `char_cnn`): the characters `char_ids[p·W ..][..char_lens[p]]` embedded by
//!   `embed.char`, convolved (kernel 3, padding 1, stride 1) and max-pooled over the word
//!   (`channels` features). Padding tokens and empty words are convolved as one character
//!   (their first slot); padding rows never reach the loss.
//! - `contextual` (if `contextual`, the SC-LSTM-LM-CNN variant): the `S` hidden states
//!   `H_j` (width `D`) a frozen pretrained encoder gives the word (`ModelInput::contextual`,
//!   computed outside the model, e.g. by `sclstm-encoder`), combined as ELMo does
//!   (Peters et al., 2018, Eq. 1): `γ Σ_j softmax(w)_j H_j` with learned `w`
//!   (`embed.mix.weights`) and `γ` (`embed.mix.gamma`). The features are a constant on the
//!   tape (no gradient flows into the encoder).
//!
//! # Families
//! - **STL** (`stl`): every task has its own complete model (word/char embeddings, CNN,
//!   BiLSTM stack) under the prefix `stl.<task>.`; head `k` reads its top layer.
//! - **LSTM-s** (`lstm-s`): one shared BiLSTM stack; every head reads `[h_fwd ⊕ h_bwd]` of
//!   the top layer.
//! - **LSTM-d** (`lstm-d`): one shared stack; task `k`'s head reads layer
//!   [`ModelConfig::supervised_layer`]`(k)` (default pos → 1, chunk → 2, ner → 3). A batch of
//!   task `k` computes only the layers up to its own.
//! - **SC-LSTM** (`sc-lstm`): stacked Bi-SC-LSTM (paper Eq. 1–3). With the `shared` reading
//!   the lower layers are plain BiLSTM layers (their task gates do not exist) and the top
//!   layer runs the shared cell plus **only** the gates of the tasks asked for; with
//!   `chained` every layer has task gates, layer 1's reading the input representation and
//!   layer `l`'s reading layer `l−1`'s `[q^k_fwd ⊕ q^k_bwd]`. Head `k` reads
//!   `s^k = [h_fwd ⊕ h_bwd ⊕ q^k_fwd ⊕ q^k_bwd]` (width 4H): the paper's `q^k ⊕ h` with the
//!   blocks in the layer's output order, so rows `0..2H` of `head.<k>.weight` read `h` and
//!   rows `2H..4H` read `q^k`.
//!
//! # Dropout
//! Inverted dropout with rate `dropout` (default 0.5) on (1) the input representation,
//! (2) each layer's output that feeds the next layer, and (3) the representation each
//! head reads (for LSTM-d one mask per layer output serves both its head and the next
//! layer; for SC-LSTM the whole top output `[h ⊕ q^k]`, and in the chained reading the
//! `q^k` passed up too). Masks come from `ChaCha8Rng::seed_from_u64(dropout_seed)`.
//! Prediction and [`Tagger::inspect`] use no dropout.
//!
//! # Loss
//! [`Tagger::loss`] returns `λ_k · L_k` (paper Eq. 4 for one batch of task `k`) with
//! `L_k = (1/B) Σ_b loss_b`: for a softmax head `loss_b = Σ_{t < len_b} −log p(y_{t,b})`
//! (Eq. 5–6), for a CRF head the sentence's negative log-likelihood. Both heads therefore
//! weigh a sentence by its length the same way, and `λ` compares across heads.
//!
//! # Parameter names and initialisation
//! STL prefixes every non-head name with `stl.<task>.`. `l` counts from 0; `d` is `fwd`
//! or `bwd`; gate order of LSTM rows is i, f, g (= ĉ), o (see `sclstm_layers::lstm`).
//!
//! | name | shape | init |
//! |---|---|---|
//! | `embed.word` | (V, Dw) | pretrained rows where given, else U(±√(3/Dw)); row 0 (padding) zero |
//! | `embed.caps` | (8, d) | U(±√(3/d)); only with `caps_dim = d` |
//! | `embed.char` | (Vc, Dc) | U(±0.1) |
//! | `embed.mix.weights` | (1, S) | 0 (uniform mix); only with `contextual` |
//! | `embed.mix.gamma` | (1, 1) | 1; only with `contextual` |
//! | `char_cnn.weight` | (3·Dc, C) | U(±1/√(3·Dc)); rows `[x_{t−1}; x_t; x_{t+1}]` blocks |
//! | `char_cnn.bias` | (1, C) | U(±1/√(3·Dc)) |
//! | `encoder.layer<l>.<d>.w_ih` | (4H, D_l) | U(±1/√H) (PyTorch) |
//! | `encoder.layer<l>.<d>.w_hh` | (4H, H) | U(±1/√H) |
//! | `encoder.layer<l>.<d>.bias` | (1, 4H) | U(±1/√H) (PyTorch's `b_ih + b_hh` in one) |
//! | `encoder.layer<l>.<d>.task.<k>.u` | (H, D_k) | U(±1/√H) — SC-LSTM `U_k` |
//! | `encoder.layer<l>.<d>.task.<k>.w` | (H, H) | U(±1/√H) — SC-LSTM `W_k` |
//! | `encoder.layer<l>.<d>.task.<k>.bias` | (1, H) | U(±1/√H) |
//! | `head.<k>.weight` | (D_s, L_k) | U(±1/√D_s) — logits = `s · weight + bias` (the transpose of PyTorch's `Linear.weight`) |
//! | `head.<k>.bias` | (1, L_k) | U(±1/√D_s) |
//! | `head.<k>.crf.transitions` | (L_k, L_k) | 0; `[i, j]` scores tag `i` followed by `j` |
//! | `head.<k>.crf.start`, `.end` | (1, L_k) | 0 |
//!
//! `D_0` = [`ModelConfig::input_dim`], `D_l = 2H` above; `D_k` = the layer's `D_l`
//! (shared reading, layer 1 of chained) or `2H` (chained, layers above 1); `D_s = 4H` for
//! SC-LSTM, else `2H`. All values are drawn from one `ChaCha8Rng` seeded by the
//! constructor's `seed`, in parameter order.
//!
//! # Inspection tensors
//! [`Tagger::inspect`] returns, for one batch and task (dropout off), as f32 matrices:
//! `input.word_ids` (T·B, 1), `input.lens` (B, 1), `input.gold` (T·B, 1),
//! `input.cap_ids` (T·B, 1), `input.char_ids` (T·B, W), `input.char_lens` (T·B, 1);
//! `act.embed.word`, `act.embed.caps`, `act.embed.char`, `act.embed.contextual`, `act.input` (the concatenated
//! representation); `act.layer<l>.h` (T·B, 2H, `[h_fwd ⊕ h_bwd]`) for each computed
//! layer of the task's path; `act.layer<l>.q.<task>` (T·B, 2H) for SC-LSTM layers with
//! gates; `act.logits.<task>` (T·B, L); `act.loss.<task>` (1, 1), the value of
//! [`Tagger::loss`]; and `grad.<parameter name>` for every parameter that loss reaches
//! (other tasks' parameters have no entry).
//!
//! # Gradient checks
//! [`gradcheck`]: the whole model against central finite differences on every parameter
//! entry (f64, CPU), reused by `sclstm gradcheck`.
//!
//! # Checkpoints
//! See [`checkpoint`]: f32 safetensors under the parameter names, the config as JSON
//! metadata, optional `extra.<name>` tensors, atomic writes, typed mismatch errors.

#![warn(missing_docs)]

pub mod checkpoint;
mod config;
mod error;
pub mod gradcheck;
mod input;
pub mod layer_checks;
mod tagger;

pub use checkpoint::{
    CheckpointExtras, Metadata, NamedMatrices, NamedTensors, adam_from_extras, adam_to_extras,
    read_metadata, read_tensors, write_tensors,
};
pub use config::{
    CharCnnConfig, ContextualConfig, ESTIMATE_BATCH_TOKENS, Family, HeadKind, ModelConfig,
    TaskConfig, TaskInputMode, available_memory_bytes,
};
pub use error::ModelError;
pub use input::{ModelInput, NUM_CAPS};
pub use tagger::{ScoredTags, Tagger};
