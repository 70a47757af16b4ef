"""Up-front checks shared by the public entry points (one home for each).

Every check raises an ``engine.errors`` exception naming the argument, column or file at fault
*before* any work starts, so that a kernel never sees input it cannot handle and a long run never
fails at its end (an unwritable output path used to be found only after sampling). The entry
points call these at their top; the checks never modify the user's data.

- :func:`check_seed`: ``None``, a ``numpy.random.SeedSequence`` or a non-negative integer
  (numpy's own message for ``seed=-1`` named neither the argument nor the function);
- :func:`check_output_path`: the directory of an output file exists (or can be created) and is
  writable, and the path is not a directory;
- :func:`check_mice_values`: no ±Inf and no value so large that its square overflows in an
  imputation model (R's ``lm.fit`` stops with "NA/NaN/Inf in 'x'" on the first);
- :func:`arrays_checksum`, :func:`read_fit_cache`: the fit cache written by ``BrmFit.save`` is
  read back only when its schema version, the shapes and counts implied by its settings and a
  SHA-256 checksum of its arrays all agree; anything else is a :class:`~engine.errors.CacheError`
  that says which files to delete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from engine.errors import CacheError, DataError, DataWarning, EngineInputError, OutputPathError, warn_user

#: mice's imputation models square and cross-multiply the data (normal equations, ridge,
#: Cholesky): a magnitude above this overflows float64 there, so it is refused up front.
MICE_MAX_ABS = 1e150


# --------------------------------------------------------------------------- seeds


def check_seed(seed: Any, name: str = "seed", where: str = "") -> None:
    """``seed`` must be None, a SeedSequence, or an integer >= 0 (not a bool)."""
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return
    prefix = f"{where}: " if where else ""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise EngineInputError(
            f"{prefix}{name} must be a non-negative integer, a numpy SeedSequence or None, got {seed!r}")
    if seed < 0:
        raise EngineInputError(f"{prefix}{name} must be a non-negative integer, got {int(seed)}")


# --------------------------------------------------------------------------- output paths


def check_output_path(path: Any, what: str, *, directory: bool = False) -> None:
    """An output file (or, with ``directory=True``, an output folder) can be written at ``path``.

    Missing folders are created for the check (the writer creates them later, as ``BrmFit.save``
    and the report do), a probe file is written and removed there, and the folders the check
    created are removed again (work that fails later leaves nothing behind); a file path must not
    be an existing directory, a folder path must not be an existing file.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise OutputPathError(f"{what} must be a non-empty path, got {path!r}")
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target) and not directory:
        raise OutputPathError(f"{what} {os.fspath(path)!r} is a directory, not a file name")
    if os.path.exists(target) and directory and not os.path.isdir(target):
        raise OutputPathError(f"{what} {os.fspath(path)!r} exists and is not a directory")
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise OutputPathError(f"{what} {os.fspath(path)!r} is not writable")
    folder = target if directory else os.path.dirname(target)
    created = []  # the missing folders, deepest first
    parent = folder
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        created.append(parent)
        parent = os.path.dirname(parent)
    try:  # the writer creates the folders anyway; a probe file proves they can be made and written
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".engine-write-test-", dir=folder)
        os.close(handle)
        os.remove(probe)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(
            f"{what} {os.fspath(path)!r} cannot be written: a part of {folder!r} is a file, not a directory") from None
    except OSError as error:
        raise OutputPathError(
            f"{what} {os.fspath(path)!r} cannot be written: {error.strerror or error} ({folder!r})") from None
    finally:
        for made in created:  # deepest first; only the empty folders this check made
            try:
                os.rmdir(made)
            except OSError:
                break


# --------------------------------------------------------------------------- mice data


def check_mice_values(values: np.ndarray, names: list[str]) -> None:
    """``values``: (n, ncol) the data as mice codes them (NaN = missing). Refuses ±Inf and
    magnitudes above MICE_MAX_ABS, naming the columns (engine never imputes from or into them)."""
    finite = np.isfinite(values) | np.isnan(values)
    infinite = [names[j] for j in np.flatnonzero(~finite.all(axis=0))]
    if infinite:
        raise DataError(
            f"mice: column(s) {infinite} contain Inf or -Inf; mice treats them as observed values "
            "and no imputation model can use them (R's lm.fit stops with \"NA/NaN/Inf in 'x'\"): "
            "set them to NaN to impute them, or drop the rows")
    with np.errstate(invalid="ignore"):
        huge = np.nanmax(np.abs(values), axis=0, initial=0.0) > MICE_MAX_ABS
    if huge.any():
        columns = [names[j] for j in np.flatnonzero(huge)]
        raise DataError(
            f"mice: column(s) {columns} contain values larger than {MICE_MAX_ABS:g} in magnitude, which "
            "overflow in the imputation models (their squares exceed the float64 range); rescale them")


# --------------------------------------------------------------------------- the fit cache


#: the metadata whose values the checksum covers too (what the draws mean and how many there are)
CHECKSUM_FIELDS = ("kind", "formula", "parameter_names", "ranef_names", "groups", "nobs", "chains", "iter",
                   "warmup", "thin", "sampler", "n_imputations")


def arrays_checksum(arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """SHA-256 over the arrays of a saved fit (names, dtypes, shapes and bytes, in name order) and
    the CHECKSUM_FIELDS of its metadata (as canonical JSON)."""
    digest = hashlib.sha256()
    if meta is not None:
        fields = {key: meta.get(key) for key in CHECKSUM_FIELDS}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _delete_hint(npz_path: str, json_path: str) -> str:
    return f"delete {npz_path} and {json_path} to refit the model"


def _int_field(meta: dict, key: str, minimum: int, fail) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(f"its {key!r} is {value!r}, not an integer >= {minimum}")
    return value


def read_fit_cache(npz_path: str, json_path: str, format_name: str, format_version: int):
    """Read and check a saved fit; returns (metadata dict, arrays dict name -> ndarray).

    Checked: the JSON parses to an object of format ``format_name`` and a known schema version;
    the npz opens without pickle and holds the arrays the metadata implies, with the shapes its
    settings imply ((chains [x m], ceil((iter - warmup) / thin), parameters)); finite draws; and,
    when the file records one (every file engine writes since schema 2), the SHA-256 checksum of
    the arrays. Anything else raises CacheError naming the files to delete.
    """

    def fail(reason: str):
        raise CacheError(f"the saved fit {json_path} / {npz_path} cannot be used: {reason}; "
                         f"{_delete_hint(npz_path, json_path)}")

    try:
        with open(json_path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        fail(f"its metadata does not read as JSON ({type(error).__name__}: {error})")
    if not isinstance(meta, dict):
        fail("its metadata is not a JSON object")
    if meta.get("format") != format_name:
        fail(f"it is not an engine fit file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        fail(f"its schema version is {version!r}")
    if version > format_version:
        raise CacheError(
            f"{json_path} was written by a newer engine (format version {version}); this engine "
            f"reads up to version {format_version}: upgrade engine, or {_delete_hint(npz_path, json_path)}")
    try:
        with np.load(npz_path, allow_pickle=False) as stored:
            if not hasattr(stored, "files"):
                fail("its array file is not an .npz archive")
            arrays = {key: np.array(stored[key]) for key in stored.files}
    except CacheError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
            NotImplementedError, RuntimeError, MemoryError, OverflowError) as error:
        # zipfile: a flipped flag byte reads as an unsupported compression method
        # (NotImplementedError) or an encrypted member (RuntimeError); a flipped size as a huge allocation
        fail(f"its array file does not read ({type(error).__name__}: {error})")
    _check_fit_contents(meta, arrays, fail)
    recorded = meta.get("arrays_sha256")
    if recorded is not None and recorded != arrays_checksum(arrays, meta):
        fail("the checksum of its draws and settings does not match the one recorded when it was "
             "saved (the files were modified or mixed up)")
    if recorded is None and version >= 2:
        fail("its metadata has no checksum of the arrays")
    return meta, arrays


def _check_fit_contents(meta: dict, arrays: dict, fail) -> None:
    for key in ("formula", "data_name", "sampler"):
        if not isinstance(meta.get(key), str):
            fail(f"its {key!r} is {meta.get(key)!r}, not a string")
    for key in ("parameter_names", "ranef_names", "groups"):
        if not isinstance(meta.get(key), list):
            fail(f"its {key!r} is missing or not a list")
    for group in meta["groups"]:
        if not (isinstance(group, dict) and isinstance(group.get("name"), str)
                and isinstance(group.get("levels"), list)):
            fail("its 'groups' entries are malformed")
    chains = _int_field(meta, "chains", 1, fail)
    iter_ = _int_field(meta, "iter", 1, fail)
    warmup = _int_field(meta, "warmup", 0, fail)
    thin = _int_field(meta, "thin", 1, fail)
    _int_field(meta, "nobs", 0, fail)
    if warmup >= iter_:
        fail(f"its warmup ({warmup}) is not below iter ({iter_})")
    chains_total = chains
    if meta.get("kind") == "brm_multiple":
        chains_total = chains * _int_field(meta, "n_imputations", 1, fail)
    per_chain = math.ceil((iter_ - warmup) / thin)
    for key in ("draws", "ranef", "chain_imputation"):
        if key not in arrays:
            fail(f"its array file has no {key!r}")
    n_par = len(meta["parameter_names"])
    n_ranef = len(meta["ranef_names"])
    expected = {"draws": (chains_total, per_chain, n_par), "ranef": (chains_total, per_chain, n_ranef),
                "chain_imputation": (chains_total,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            fail(f"its {key!r} array has shape {arrays[key].shape}, but its settings (chains, iter, "
                 f"warmup, thin, names) imply {shape}")
    for key, value in arrays.items():
        if key.startswith("stat__") and value.shape[:2] != (chains_total, per_chain):
            fail(f"its {key!r} array has shape {value.shape}, expected ({chains_total}, {per_chain})")
    for key in ("draws", "ranef"):
        if arrays[key].dtype.kind != "f":
            fail(f"its {key!r} array has dtype {arrays[key].dtype}, not float")
        if not np.isfinite(arrays[key]).all():
            fail(f"its {key!r} array has non-finite values")


# --------------------------------------------------------------------------- formulas


def warn_nans_produced(label: str, value, result) -> None:
    """R's warning "In log(x) : NaNs produced" when a function of a formula turns numbers into NaN
    (the rows are then dropped as missing, as R's model.frame does)."""
    result = np.asarray(result)
    if result.dtype.kind == "f" and np.isnan(result).any():
        value = np.broadcast_to(np.asarray(value, dtype=np.float64), result.shape)
        if (np.isnan(result) & ~np.isnan(value)).any():
            warn_user(f"In {label} : NaNs produced", DataWarning)


# --------------------------------------------------------------------------- pool


def check_pool_inputs(estimates, std_errors, terms: list, fit: int | None = None) -> None:
    """Estimates and standard errors of the fits ((m, p), or (p,) of fit ``fit``): real numbers,
    standard errors not negative (checked before they are cast to float)."""
    where = f"fit {fit} has " if fit is not None else ""
    estimates, std_errors = np.asarray(estimates), np.asarray(std_errors)
    for what, values in (("estimates", estimates), ("standard errors", std_errors)):
        if np.iscomplexobj(values):
            raise EngineInputError(f"pool(): {where}complex {what}; they must be real numbers")
    if std_errors.dtype.kind not in "biuf":
        return  # non-numeric: the cast to float reports it
    with np.errstate(invalid="ignore"):
        negative = np.atleast_2d(std_errors) < 0
    if negative.any():
        i, j = (int(v) for v in np.argwhere(negative)[0])
        i = fit if fit is not None else i
        raise EngineInputError(
            f"pool(): fit {i} has a negative standard error ({float(np.atleast_2d(std_errors)[0 if fit is not None else i, j])!r}) "
            f"for term {terms[j]!r}; standard errors cannot be negative")


# --------------------------------------------------------------------------- data files


def read_data_file(reader, path: str, kind: str, **options):
    """``reader(path, **options)`` (pandas' read_csv / read_stata) with its parser errors turned into
    a DataError naming the file (a garbage file used to raise pandas', struct's or codecs' errors)."""
    import pandas as pd

    try:
        frame = reader(path, **options)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, EOFError,
            OSError, IndexError, KeyError, TypeError, OverflowError, MemoryError) as error:
        raise DataError(f"{path!r} cannot be read as a {kind} file ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from None
    except Exception as error:  # struct.error and other parser internals
        if type(error).__module__ in ("struct", "zlib", "gzip", "_struct", "_csv", "csv"):
            raise DataError(f"{path!r} cannot be read as a {kind} file ({type(error).__name__}: {error})") from None
        raise
    return frame


def check_numeric_columns(frame, columns, source: str) -> None:
    """The named columns of ``frame`` are numeric (or boolean); a column read as text names its
    first non-numeric value (it used to fail much later as "the response is a factor")."""
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        if values.dtype.kind in "biuf":
            continue
        import pandas as pd

        numbers = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & numbers.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"column {column!r} of {source} must be numeric but has text, e.g. {values.iloc[row]!r} "
                f"in data row {row + 1}")


# --------------------------------------------------------------------------- brm


#: the samplers work on cross-products of the design and the response (X'X, X'y, y'y): columns
#: beyond these magnitudes under- or overflow there, so they are refused with a clear message.
BRM_MIN_ABS, BRM_MAX_ABS = 1e-150, 1e150


def check_fit_file(file) -> None:
    """brm's ``file=``: an existing saved fit is reloaded (and checked then); otherwise the place it
    will be written must be writable, checked before any chain runs (the fit used to be lost)."""
    if file is None:
        return
    from engine.multilevel.results import fit_exists, fit_paths

    if not isinstance(file, (str, os.PathLike)) or not os.fspath(file):
        raise OutputPathError(f"file= must be a non-empty path, got {file!r}")
    if fit_exists(file):
        return
    for path in fit_paths(file):
        check_output_path(path, "file=")


def check_brm_frame(frame, label: str = "", family: str = "gaussian", trials=None, n_rows: int | None = None) -> None:
    """Response and population-level columns of a brm model frame: magnitudes the samplers can use,
    and no predictor named ``Intercept`` (it would give a second parameter ``b_Intercept``).
    ``n_rows``: the number of rows, for the messages, when ``frame`` holds only their extremes."""
    from engine.errors import ModelSpecError

    where = f" ({label})" if label else ""
    names = list(frame.column_names)
    if "Intercept" in names:
        raise ModelSpecError(
            f"a population-level predictor is named 'Intercept'{where}, which clashes with brms' "
            "intercept parameter b_Intercept; rename the column (brms reserves the name too)")
    y = np.asarray(frame.y, dtype=np.float64)
    if family != "gaussian":
        _check_glm_response(y, frame.response_name, where, family, trials)
    elif y.size > 1 and np.isfinite(y).all() and np.all(y == y[0]):
        raise ModelSpecError(
            f"the response {frame.response_name!r}{where} is constant ({y[0]:g} in all {n_rows or y.size} rows): "
            "the likelihood is unbounded as sigma goes to 0, so the posterior cannot be sampled")
    if y.size and np.isfinite(y).all():
        big = float(np.max(np.abs(y)))
        if big > BRM_MAX_ABS:
            raise DataError(
                f"the response {frame.response_name!r}{where} reaches {big:.3g} in magnitude, beyond the "
                f"{BRM_MAX_ABS:g} the samplers' sums of squares can hold; rescale it")
        if family == "gaussian" and 0.0 < big < BRM_MIN_ABS:
            # its squares underflow: the draws were silently wrong (b ~ 1e-37 for y ~ 1e-200)
            raise DataError(
                f"the response {frame.response_name!r}{where} is at most {big:.3g} in magnitude, below the "
                f"{BRM_MIN_ABS:g} where the samplers' sums of squares underflow; rescale it")
    X = np.asarray(frame.X, dtype=np.float64)
    if X.size == 0 or not np.isfinite(X).all():
        return  # non-finite values are reported by the model layer
    big = np.max(np.abs(X), axis=0)
    for j, name in enumerate(names):
        if name == "(Intercept)" or big[j] == 0.0:
            continue
        if big[j] > BRM_MAX_ABS or big[j] < BRM_MIN_ABS:
            raise DataError(
                f"the population-level column {name!r}{where} has largest magnitude {big[j]:.3g}, outside "
                f"[{BRM_MIN_ABS:g}, {BRM_MAX_ABS:g}] where the samplers' cross-products neither under- "
                "nor overflow; rescale it (its coefficient scales inversely)")


def _check_glm_response(y: np.ndarray, name: str, where: str, family: str, trials) -> None:
    """A bernoulli / binomial / poisson response at the edge of its range in every row (all 0, all 1,
    all successes): the likelihood keeps increasing as the intercept goes to -inf or +inf (complete
    separation), so the model cannot identify it. A constant count inside the range (poisson y = 3
    everywhere, binomial 2 of 5) is an ordinary, identified model and is fitted."""
    from engine.errors import ModelSpecError

    if y.size < 2 or not np.isfinite(y).all():
        return
    n = None if trials is None else np.asarray(trials, dtype=np.float64)
    if np.all(y == 0):
        side = "every outcome is 0" if family != "poisson" else "every count is 0"
        direction = "-inf"
    elif family == "bernoulli" and np.all(y == 1):
        side, direction = "every outcome is 1", "+inf"
    elif family == "binomial" and n is not None and n.shape == y.shape and np.all(y == n):
        side, direction = "every trial is a success", "+inf"
    else:
        return
    raise ModelSpecError(
        f"the {family} response {name!r}{where} is at the edge of its range in all {y.size} rows ({side}): "
        f"the likelihood keeps increasing as the linear predictor goes to {direction} (complete separation), "
        "so the data do not identify the intercept; engine does not sample such a model")


# --------------------------------------------------------------------------- the command line


def check_replicate_options(settings) -> None:
    """``python -m engine replicate``'s options, before anything runs: the seed, the data file
    (exists, is a file), and the output paths (--json file, --report folder) writable."""
    check_seed(settings.seed, name="--seed")
    if settings.data is not None:
        if not os.path.exists(settings.data):
            raise DataError(f"--data: data file not found: {settings.data!r}")
        if not os.path.isfile(settings.data):
            raise DataError(f"--data: {settings.data!r} is not a file")
        if not os.access(settings.data, os.R_OK):
            raise DataError(f"--data: {settings.data!r} is not readable")
    if settings.json_path is not None:
        check_output_path(settings.json_path, "--json")
    if settings.report_dir is not None:
        check_output_path(settings.report_dir, "--report", directory=True)


def report_cli_error(error: BaseException, program: str) -> int:
    """Print an engine error as R-like short lines on stderr; returns the exit status (2)."""
    import sys

    lines = str(error).splitlines() or [""]
    sys.stderr.write(f"{program}: error: {type(error).__name__}: {lines[0]}\n")
    for line in lines[1:3]:  # a FormulaError's formula and caret
        sys.stderr.write(f"  {line}\n")
    sys.stderr.flush()
    return 2


@contextlib.contextmanager
def sampler_failures(sampler: str):
    """Numerical failures inside a sampler's kernels (a Cholesky factor of a matrix that lost
    positive definiteness, a division by zero) as a SamplerError naming the sampler."""
    from engine.errors import SamplerError

    try:
        yield
    except (np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError, OverflowError) as error:
        raise SamplerError(
            f"the {sampler} sampler failed numerically ({type(error).__name__}: {error}); the data may be "
            "degenerate (a constant or nearly constant response, extreme scales)") from None


# --------------------------------------------------------------------------- arrays


def as_array(value, dtype, name: str) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``; an EngineInputError naming the argument when
    it does not convert (text, ragged lists, complex numbers for a real array)."""
    if np.iscomplexobj(value) and np.dtype(dtype).kind != "c":
        raise EngineInputError(f"{name} must hold real numbers, got complex values")
    try:
        return np.ascontiguousarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise EngineInputError(f"{name} must be an array of {np.dtype(dtype).name} numbers: {error}") from None


# --------------------------------------------------------------------------- flags and entry points


def check_flag(value: Any, name: str, error=EngineInputError) -> bool:
    """A logical argument as R reads one: True/False (numpy's too) or the numbers 0 and 1; anything
    else is R's "argument is not interpretable as logical", naming the argument."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise error(f"{name} must be True or False, got {value!r}")


def check_lmer_call(formula: Any, REML: Any) -> bool:  # noqa: N803 (lme4's name)
    """``lmer(formula, data, REML)``'s arguments before any parsing; returns REML as a bool."""
    from engine.errors import ModelSpecError

    if not isinstance(formula, str):
        raise ModelSpecError(f"lmer(): formula must be a formula string such as 'y ~ x + (1 | g)', got {formula!r}")
    return check_flag(REML, "lmer(): REML", ModelSpecError)


def check_lmer_response(y: np.ndarray, name: str) -> None:
    """A constant response: lme4 fits it (sigma = 0 and a warning that the scaled gradient cannot
    be evaluated); engine's profiled deviance divides by the residual sum of squares, so it refuses."""
    from engine.errors import ModelSpecError

    if y.size and np.all(y == y[0]):
        raise ModelSpecError(f"lmer(): the response {name!r} is constant ({y[0]!r} in every row); there is no "
                             "variance to split between groups and residuals")


def check_lmer_scales(X: np.ndarray, y: np.ndarray, names: list[str], response: str) -> None:
    """lmer's profiled deviance works on cross-products (X'X, X'y, y'y, Z'Z): a response or
    fixed-effect column beyond [BRM_MIN_ABS, BRM_MAX_ABS] in magnitude under- or overflows there.
    lme4 fails there too (x * 1e200: "objective in x0 returns NA"; x * 1e-200: "Downdated VtV is
    not positive definite") or reports a variance of Inf or 0 (y * 1e200, y * 1e-200)."""
    from engine.lmer_kernels import largest_magnitudes

    bigs = largest_magnitudes(X, y).tolist()  # |y|'s then each column's, finite entries only
    columns = [(response, "response", bigs[0])] + [(name, "fixed-effect column", bigs[1 + j])
                                                   for j, name in enumerate(names) if name != "(Intercept)"]
    for name, what, big in columns:
        if big != 0.0 and not BRM_MIN_ABS <= big <= BRM_MAX_ABS:
            raise DataError(
                f"lmer(): the {what} {name!r} has largest magnitude {big:.3g}, outside [{BRM_MIN_ABS:g}, "
                f"{BRM_MAX_ABS:g}] where the cross-products of the profiled deviance neither under- nor "
                "overflow (lme4 fails or reports a variance of 0 or Inf there); rescale it")


def check_prediction_args(seed: Any, allow_new_levels: Any, re_formula: Any) -> None:
    """The arguments that brms-style prediction functions share, before any draws are touched."""
    check_seed(seed)
    check_flag(allow_new_levels, "allow_new_levels")
    if isinstance(re_formula, str):
        rhs = re_formula.strip()
        rhs = rhs[1:].strip() if rhs.startswith("~") else rhs
        if rhs.upper() not in ("NA", "0", "-1", "1", ""):
            from engine.formula import parse_formula

            parse_formula("y ~ " + rhs)  # a FormulaError pointing into re_formula's text


def checked_arguments(function):
    """Decorator: a call with an unknown, repeated or missing argument raises KeywordArgumentError
    naming it and the arguments there are (Python's own TypeError names no alternatives, and R
    users pass R's arguments such as ``loo(cores=2)``). The binding is checked only when the call
    itself raises TypeError, so a valid call costs one ``try``."""
    import functools
    import inspect

    from engine.errors import KeywordArgumentError

    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except TypeError as raised:
            try:  # a call that does not bind fails before the body runs: that TypeError is ours
                signature.bind(*args, **kwargs)
            except TypeError as error:
                accepted = [name for name, p in signature.parameters.items()
                            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "self"]
                raise KeywordArgumentError(
                    f"{function.__name__}(): {error}; its arguments: {', '.join(accepted)}") from None
            raise raised

    return wrapper
