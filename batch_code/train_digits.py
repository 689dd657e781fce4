"""Train a random forest on the digits data set that scikit-learn ships (no download)."""

import argparse
import json
import os
import pathlib
import time

import joblib
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = pathlib.Path(os.environ.get("MLBATCH_RESULTS_DIR", "results"))
    results.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=args.test_size, random_state=args.seed, stratify=digits.target
    )
    print(f"run {os.environ.get('MLBATCH_RUN_ID', '-')}: {len(x_train)} training, {len(x_test)} test samples")
    start = time.monotonic()
    model = RandomForestClassifier(n_estimators=args.n_estimators, random_state=args.seed, n_jobs=-1)
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 4),
        "n_estimators": args.n_estimators,
        "train_seconds": round(time.monotonic() - start, 2),
    }
    joblib.dump(model, results / "model.joblib")
    (results / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"metrics: {json.dumps(metrics)}")


if __name__ == "__main__":
    main()
